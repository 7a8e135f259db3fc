"""Labelled records as the downstream stages train on them: rows x, their lengths, their targets.

    records = Records.of(task_arrays)                   # or Records.of((x, y))
    both = records.plus(pool)                           # pool rows appended, targets zeros
    taught = both.with_targets(np.concatenate([records.y, teacher_y]))
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Records:
    """x [N, T, leads] f32 mV, zero-padded past each row's length; lengths [N] samples of signal;
    y [N, ...] targets (binary [N], multilabel [N, C], multiclass [N] int, regression [N])."""

    x: np.ndarray
    y: np.ndarray
    lengths: np.ndarray

    @classmethod
    def of(cls, data) -> "Records":
        """From TaskArrays (x, y, lengths) or an (x, y) pair of whole rows."""
        x, y = (data.x, data.y) if hasattr(data, "x") else data
        x, y = np.asarray(x, np.float32), np.asarray(y)
        lengths = getattr(data, "lengths", None)
        return cls(x, y, np.full(len(y), x.shape[1], np.int64) if lengths is None else np.asarray(lengths))

    def __len__(self) -> int:
        return len(self.y)

    def plus(self, other: "Records") -> "Records":
        """These rows then the other's, zero-padded to the longer of the two; the other's targets are
        zeros of this one's shape and type (with_targets writes real ones)."""
        width = max(self.x.shape[1], other.x.shape[1])
        x = [np.pad(r.x, ((0, 0), (0, width - r.x.shape[1]), (0, 0))) for r in (self, other)]
        y = np.concatenate([self.y, np.zeros((len(other),) + self.y.shape[1:], self.y.dtype)])
        return Records(np.concatenate(x), y, np.concatenate([self.lengths, other.lengths]))

    def with_targets(self, y) -> "Records":
        """The same rows (not copied) with other targets."""
        y = np.asarray(y)
        if len(y) != len(self):
            raise ValueError(f"{len(y)} targets for {len(self)} records")
        return dataclasses.replace(self, y=y)
