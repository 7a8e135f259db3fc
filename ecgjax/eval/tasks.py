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

A task's records per split are ecgjax.eval.folds' (PTB-XL strat_fold or the ingest split), its
arrays ecgjax.eval.task_data's; the CinC 2017 reader is ecgjax.data.sources.cinc2017's.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

import numpy as np
import pandas as pd

from ecgjax.data.errors import ECGInputError
from ecgjax.data.leads import CANONICAL_LEADS
from ecgjax.data.sources.cinc2017 import CINC2017_CLASSES
from ecgjax.data.sources.ptbxl import PTBXL_SUPERCLASSES
from ecgjax.downstream.heads import TASK_TYPES

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
