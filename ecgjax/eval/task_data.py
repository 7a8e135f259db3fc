"""A task's arrays: one window per record of a store, the task's leads, valid targets only.

    data = load_task_data(store, task, {"train": "1-7", "val": "8", "test": "9"})
    data["train"].x       # [N, task.window_s * store.fs, len(task.leads)] f32 mV
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ecgjax.data.store import ECGStore
from ecgjax.eval.folds import task_splits
from ecgjax.eval.tasks import Task


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
    """{'train', 'val', 'test'} -> TaskArrays of `task` on `store` (folds: see folds.task_splits)."""
    return {split: load_task_arrays(store, task, records)
            for split, records in task_splits(store, folds).items()}
