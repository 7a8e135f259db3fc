"""A task's arrays: the records of a store (whole, or cut to a length), the task's leads, valid targets only.

    data = load_task_data(store, task, {"train": "1-7", "val": "8", "test": "9"}, record_s=0)
    data["train"].x         # [N, longest record, len(task.leads)] f32 mV, zero-padded
    data["train"].lengths   # [N] samples of each record (ecgjax.downstream.windows cuts windows from them)
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ecgjax.data.store import ECGStore
from ecgjax.eval.folds import task_splits
from ecgjax.eval.tasks import Task


@dataclasses.dataclass
class TaskArrays:
    """Records: x [N, T, len(task.leads)] f32 mV, zero-padded past each record's length; y (see
    Task.targets); patient [N] (store patient_index); record_index [N] (store index); lengths [N]
    samples of signal in each row (None: all T)."""

    x: np.ndarray
    y: np.ndarray
    patient: np.ndarray
    record_index: np.ndarray
    lengths: np.ndarray | None = None

    def __post_init__(self):
        if self.lengths is None:
            self.lengths = np.full(len(self.y), self.x.shape[1], np.int64)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, mask) -> "TaskArrays":
        return TaskArrays(self.x[mask], self.y[mask], self.patient[mask], self.record_index[mask],
                          self.lengths[mask])


def load_task_arrays(store: ECGStore, task: Task, records: np.ndarray, *, record_s: float | None = None) -> TaskArrays:
    """Each record's signal in the task's leads; records without a valid target are left out.

    record_s: None -> the first task.window_s seconds; 0 -> the whole record (rows padded to the
    longest); > 0 -> the first record_s seconds (001 pads / crops every record to 60 s). Rows shorter
    than their record_s are zero-padded, and `lengths` says how much is signal.
    """
    records = np.asarray(records, np.int64)
    y, valid = task.targets(store.metadata.iloc[records].reset_index(drop=True))
    records, y = records[valid], y[valid]
    lengths = np.asarray(store.lengths, np.int64)[records]
    if record_s is None:
        record_s = task.window_s
    width = int(round(record_s * store.fs)) if record_s else int(lengths.max(initial=1))
    lengths = np.minimum(lengths, width)
    patient = store.metadata["patient_index"].to_numpy(np.int64)[records]
    return TaskArrays(x=_read_rows(store, records, lengths, width, task.lead_columns), y=y, patient=patient,
                      record_index=records, lengths=lengths)


def _read_rows(store: ECGStore, records: np.ndarray, lengths: np.ndarray, width: int, columns) -> np.ndarray:
    """[len(records), width, len(columns)] f32: the first lengths[i] samples of each record, zero-padded."""
    x = np.zeros((len(records), width, len(columns)), np.float32)
    for row, (record, n) in enumerate(zip(records, lengths)):
        x[row, :n] = store.read(int(record), 0, int(n))[:, columns]
    return x


def load_unlabelled_arrays(store: ECGStore, task: Task, width: int, y_like: np.ndarray, *, max_records: int = 0,
                           seed: int = 0) -> TaskArrays:
    """Records of another corpus without their labels (self-distillation's pool): those with every
    lead of the task, at most max_records of them (a fixed random sample; 0 = all), each cut to its
    first `width` samples. y: zeros shaped like y_like's rows, never read; patient and record_index
    are -1 (not records of the task's store)."""
    columns = task.lead_columns
    records = np.flatnonzero([store.lead_mask(i)[columns].all() for i in range(len(store))])
    if 0 < max_records < len(records):
        records = np.sort(np.random.default_rng(seed).choice(records, max_records, replace=False))
    lengths = np.minimum(np.asarray(store.lengths, np.int64)[records], width)
    missing = np.full(len(records), -1, np.int64)
    return TaskArrays(x=_read_rows(store, records, lengths, width, columns),
                      y=np.zeros((len(records),) + y_like.shape[1:], y_like.dtype), patient=missing,
                      record_index=missing, lengths=lengths)


def concatenate(parts: list[TaskArrays]) -> TaskArrays:
    """The records of every part in order, rows zero-padded to the widest part."""
    width = max(part.x.shape[1] for part in parts)
    return TaskArrays(x=np.concatenate([np.pad(part.x, ((0, 0), (0, width - part.x.shape[1]), (0, 0)))
                                        for part in parts]),
                      **{name: np.concatenate([getattr(part, name) for part in parts])
                         for name in ("y", "patient", "record_index", "lengths")})


def load_task_data(store: ECGStore, task: Task, folds: dict | None = None, *,
                   record_s: float | None = None) -> dict[str, TaskArrays]:
    """{'train', 'val', 'test'} -> TaskArrays of `task` on `store` (folds: see folds.task_splits)."""
    return {split: load_task_arrays(store, task, records, record_s=record_s)
            for split, records in task_splits(store, folds).items()}
