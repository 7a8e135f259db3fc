"""Downstream tasks: which labels, which leads, which window, and the (train, val, test) arrays.

A `Task` names its label column(s) in a store's metadata table and how to turn them into targets:

  binary      one 0/1 column (or a column mapped through `value_map`, e.g. sex 'M'/'F' -> 0/1)
  multilabel  several 0/1 columns, one output each (PTB-XL 'superclass': NORM MI STTC CD HYP)
  multiclass  one column of class names (`classes`), e.g. CinC 2017 'label' in N, A, O, ~
  regression  one numeric column; values above `max_value` are capped (PTB-XL codes ages > 89 as
              300: they become 90, so those patients stay in the data, see `AGE_CAP`)

Built-ins (`get_task`): MI, STTC, CD, HYP, NORM (003, binary), 'superclass' (5-label), 'age'
(regression), 'sex' (binary, 1 = female; 000), 'afib' (PTB-XL AFIB or synthetic afib column),
'conditions' (the synthetic cohort's five conditions, multi-label), 'cinc2017' (001: 4 classes,
single lead I, macro F1), any label column of the store by name (binary), and
'csv:/path/labels.csv:column[:type]' for a label table joined on record_id.

Splits (`task_splits`): PTB-XL records are split by strat_fold with configurable folds (standard
train 1-8 / val 9 / test 10; a copy holding folds 1-9 uses 1-7 / 8 / 9); stores without strat_fold
use the split column assigned at ingest (patient-level hash). Records without a valid target are
dropped from every split.

PhysioNet/CinC 2017: the reader is `ecgjax.data.cinc` (re-exported here as `read_cinc2017`,
`read_cinc2017_reference`); `ingest_cinc2017` builds its store, split at random 75/5/20 %
(train/val/test) as in 001, reproduced with the hashed patient split (each record is its own patient).
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

import numpy as np
import pandas as pd

from ecgjax.data.cinc import CINC2017_CLASSES, CINC2017_SPLIT, read_cinc2017, read_cinc2017_reference  # noqa: F401
from ecgjax.data.errors import ECGInputError
from ecgjax.data.leads import CANONICAL_LEADS
from ecgjax.data.splits import SPLITS, fold_split, parse_folds  # noqa: F401 (tasks.parse_folds)
from ecgjax.data.store import ECGStore
from ecgjax.errors import UserError

TASK_TYPES = ("binary", "multiclass", "multilabel", "regression")
PTBXL_SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")
SYNTHETIC_CONDITIONS = ("wide_qrs", "st_elevation", "t_inversion", "high_voltage", "afib")
AGE_CAP = 90.0  # PTB-XL: age 300 means "> 89"
SEX_FEMALE = {"1": 1, "1.0": 1, "F": 1, "f": 1, "female": 1, "0": 0, "0.0": 0, "M": 0, "m": 0, "male": 0}


@dataclasses.dataclass(frozen=True)
class Task:
    """One downstream task.

    columns: metadata column(s) with the labels (one, or one per output for multilabel).
    classes: class names of a multiclass task (values of its column), in output order.
    leads: canonical lead names fed to the model, in this order.
    value_map: str(value) -> target for binary / multiclass columns that are not already 0/1 or
      class names (unknown values are dropped).
    max_value: regression targets above it are set to it.
    label_csv: a CSV with record_id and the label column, joined onto the store's metadata.
    """

    name: str
    type: str
    columns: tuple[str, ...]
    classes: tuple[str, ...] = ()
    leads: tuple[str, ...] = CANONICAL_LEADS
    window_s: float = 10.0
    value_map: dict | None = None
    max_value: float | None = None
    label_csv: str = ""

    def __post_init__(self):
        if self.type not in TASK_TYPES:
            raise ValueError(f"task type must be one of {TASK_TYPES}, got {self.type!r}")
        if self.type == "multiclass" and len(self.classes) < 2:
            raise ValueError(f"multiclass task {self.name!r} needs at least two classes")
        unknown = [lead for lead in self.leads if lead not in CANONICAL_LEADS]
        if unknown:
            raise ValueError(f"task {self.name!r}: unknown leads {unknown}")

    @property
    def output_names(self) -> tuple[str, ...]:
        if self.type == "multilabel":
            return tuple(self.columns)
        if self.type == "multiclass":
            return tuple(self.classes)
        return (self.name,)

    @property
    def num_outputs(self) -> int:
        return len(self.output_names)

    @property
    def lead_columns(self) -> list[int]:
        """Positions of `leads` in the store's canonical 12-lead order."""
        return [CANONICAL_LEADS.index(lead) for lead in self.leads]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Task":
        d = dict(d)
        for key in ("columns", "classes", "leads"):
            d[key] = tuple(d.get(key, ()))
        return cls(**d)

    def targets(self, metadata: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(y, valid) for the rows of `metadata`.

        y: binary [N] float32 0/1; multilabel [N, C] float32; multiclass [N] int32; regression [N] float32.
        valid: [N] bool, False where the label is missing or not understood.
        """
        metadata = self._with_label_csv(metadata)
        missing = [c for c in self.columns if c not in metadata]
        if missing:
            raise KeyError(f"task {self.name!r}: metadata has no column(s) {missing}; "
                           f"available: {sorted(metadata.columns)}")
        if self.type == "multilabel":
            values = metadata[list(self.columns)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
            return np.nan_to_num(values).astype(np.float32), np.isfinite(values).all(axis=1)
        column = metadata[self.columns[0]]
        if self.type == "regression":
            values = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
            if self.max_value is not None:
                values = np.minimum(values, self.max_value)
            return np.nan_to_num(values).astype(np.float32), np.isfinite(values)
        if self.type == "multiclass":
            mapping = self.value_map or {c: i for i, c in enumerate(self.classes)}
        else:
            mapping = self.value_map or {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "False": 0, "True": 1}
        codes = column.map(lambda v: mapping.get(str(v).strip(), -1)).to_numpy(np.int64)
        valid = codes >= 0
        dtype = np.int32 if self.type == "multiclass" else np.float32
        return np.where(valid, codes, 0).astype(dtype), valid

    def _with_label_csv(self, metadata: pd.DataFrame) -> pd.DataFrame:
        if not self.label_csv:
            return metadata
        labels = read_label_csv(self.label_csv, self.columns[0])
        joined = metadata[["record_id"]].astype(str).merge(labels, on="record_id", how="left")
        out = metadata.drop(columns=[self.columns[0]], errors="ignore").reset_index(drop=True)
        out[self.columns[0]] = joined[self.columns[0]].to_numpy()
        return out


def read_label_csv(path, column: str) -> pd.DataFrame:
    """[record_id, column] of a label CSV (the id column: record_id, record, ecg_id or the first)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ECGInputError(path, "label CSV not found")
    table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    if column not in table:
        raise ECGInputError(path, f"no column {column!r} (columns: {list(table.columns)})")
    id_column = next((c for c in ("record_id", "record", "ecg_id") if c in table), table.columns[0])
    if id_column == column:
        raise ECGInputError(path, "needs a record id column besides the label column")
    return pd.DataFrame({"record_id": table[id_column].str.strip(), column: table[column]})


def _csv_task(spec: str, leads: Sequence[str] | None) -> Task:
    """'csv:/path/labels.csv:column[:type]'; the type is inferred when absent (two values 0/1 ->
    binary, other numbers -> regression, else multiclass over the sorted distinct values)."""
    parts = spec.split(":")
    if len(parts) not in (3, 4):
        raise ValueError(f"csv task spec must be 'csv:/path/labels.csv:column[:type]', got {spec!r}")
    _, path, column, *rest = parts
    values = read_label_csv(path, column)[column].dropna()
    kind = rest[0] if rest else None
    numeric = pd.to_numeric(values, errors="coerce")
    if kind is None:
        if numeric.notna().all() and set(numeric.unique()) <= {0, 1}:
            kind = "binary"
        elif numeric.notna().all():
            kind = "regression"
        else:
            kind = "multiclass"
    classes = tuple(sorted(values.astype(str).str.strip().unique())) if kind == "multiclass" else ()
    return Task(name=column, type=kind, columns=(column,), classes=classes, label_csv=str(path),
                leads=tuple(leads) if leads else CANONICAL_LEADS)


def builtin_tasks() -> dict[str, Task]:
    tasks = {name: Task(name, "binary", (name,)) for name in PTBXL_SUPERCLASSES}
    tasks["superclass"] = Task("superclass", "multilabel", PTBXL_SUPERCLASSES)
    tasks["conditions"] = Task("conditions", "multilabel", SYNTHETIC_CONDITIONS)
    tasks["age"] = Task("age", "regression", ("age",), max_value=AGE_CAP)
    tasks["sex"] = Task("sex", "binary", ("sex",), value_map=SEX_FEMALE)
    tasks["cinc2017"] = Task("cinc2017", "multiclass", ("label",), classes=CINC2017_CLASSES, leads=("I",))
    return tasks


def get_task(spec: str, metadata_columns: Sequence[str] = (), *, leads: Sequence[str] | None = None,
             window_s: float | None = None) -> Task:
    """The task named `spec` (see module docstring). `metadata_columns` resolves 'afib' and
    store label columns; `leads` / `window_s` override the task's defaults."""
    columns = list(metadata_columns)
    if spec.startswith("csv:"):
        task = _csv_task(spec, leads)
    elif spec == "afib":
        column = next((c for c in ("AFIB", "afib") if c in columns), "AFIB")
        task = Task("afib", "binary", (column,))
    elif spec in builtin_tasks():
        task = builtin_tasks()[spec]
    elif spec in columns:
        task = Task(spec, "binary", (spec,))
    else:
        raise ValueError(f"unknown task {spec!r}: use one of {sorted(builtin_tasks())}, 'afib', a label "
                         f"column of the store, or 'csv:/path/labels.csv:column[:type]'")
    changes = {}
    if leads:
        changes["leads"] = tuple(leads)
    if window_s:
        changes["window_s"] = float(window_s)
    return dataclasses.replace(task, **changes) if changes else task


# ------------------------------------------------------------------------------------- splits

def has_folds(store: ECGStore) -> bool:
    """Whether every record has a PTB-XL strat_fold, so fold lists can split the store."""
    metadata = store.metadata
    return "strat_fold" in metadata and bool(metadata["strat_fold"].notna().all())


def task_splits(store: ECGStore, folds: dict | None = None) -> dict[str, np.ndarray]:
    """{'train', 'val', 'test'} -> store record indices.

    folds: {'train': '1-8', 'val': '9', 'test': '10'} applied to metadata strat_fold when the store
    has that column (PTB-XL); otherwise (or with folds None) the store's own split column.
    """
    metadata = store.metadata
    if folds and has_folds(store):
        names = fold_split(metadata["strat_fold"].to_numpy(), train_folds=parse_folds(folds["train"]),
                           val_folds=parse_folds(folds["val"]), test_folds=parse_folds(folds["test"]))
    else:
        names = metadata["split"].to_numpy()
    return {split: np.flatnonzero(names == split) for split in SPLITS}


# ------------------------------------------------------------------------------------- arrays

@dataclasses.dataclass
class TaskArrays:
    """One window per record: x [N, T, len(task.leads)] f32 mV, y (see Task.targets), patient [N]
    (store patient_index), record_index [N] (store index)."""

    x: np.ndarray
    y: np.ndarray
    patient: np.ndarray
    record_index: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, mask) -> "TaskArrays":
        return TaskArrays(self.x[mask], self.y[mask], self.patient[mask], self.record_index[mask])


def load_task_arrays(store: ECGStore, task: Task, records: np.ndarray, *, offset_s: float = 0.0) -> TaskArrays:
    """The window [offset_s, offset_s + task.window_s) of each record (zero-padded when shorter),
    the task's leads only; records without a valid target are left out."""
    records = np.asarray(records, np.int64)
    y, valid = task.targets(store.metadata.iloc[records].reset_index(drop=True))
    records, y = records[valid], y[valid]
    window, offset = int(round(task.window_s * store.fs)), int(round(offset_s * store.fs))
    columns = task.lead_columns
    x = np.zeros((len(records), window, len(columns)), np.float32)
    for row, record in enumerate(records):
        length = int(store.lengths[record])
        start = min(offset, max(length - window, 0))
        n = min(window, length - start)
        x[row, :n] = store.read(int(record), start, n)[:, columns]
    patient = store.metadata["patient_index"].to_numpy(np.int64)[records]
    return TaskArrays(x=x, y=y, patient=patient, record_index=records)


def load_task_data(store: ECGStore, task: Task, folds: dict | None = None) -> dict[str, TaskArrays]:
    """{'train', 'val', 'test'} -> TaskArrays of `task` on `store`."""
    return {split: load_task_arrays(store, task, records)
            for split, records in task_splits(store, folds).items()}


# --------------------------------------------------------------------------- PhysioNet/CinC 2017

def ingest_cinc2017(root, output, *, target_fs: float = 250.0, seed: int = 0) -> ECGStore:
    """A store of the CinC 2017 records (resampled to target_fs, lead I of the 12-lead layout),
    split 75/5/20 % train/val/test by hashed record (= patient) id as in 001; unusable records go
    to the store's rejected.csv (as `python -m ecgjax.data.ingest --source=cinc2017`)."""
    from ecgjax.data.ingest import ingest

    ingest("cinc2017", root, output, target_fs=target_fs, workers=0, progress=False,
           split=dataclasses.replace(CINC2017_SPLIT, seed=seed))
    return ECGStore(output)
