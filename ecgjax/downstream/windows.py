"""The downstream protocol's windows: random crops to train on, sliding windows to score a record with.

    crops = random_crops(x, lengths, window, rng)           # [N, window, leads], fresh every epoch
    outputs, owner = apply_sliding(fn, x, lengths, window, stride, batch_size)  # fn over the windows
    record_scores = aggregate(window_scores, owner, len(x), "mean")

The windows themselves (`random_crops`, `sliding_windows`, `cut_windows`: records are rows of a
zero-padded x [N, T, leads] with their true lengths [N]) are ecgjax.signal.windows', the one
windowing implementation annotation and embedding use too; they are importable from here for the
protocol's callers.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ecgjax.downstream.batches import batched_apply
from ecgjax.signal.windows import cut_windows, random_crops, sliding_windows

__all__ = ("AGGREGATIONS", "aggregate", "apply_sliding", "cut_windows", "random_crops", "sliding_windows")

AGGREGATIONS = ("mean", "max")


def apply_sliding(fn: Callable, x: np.ndarray, lengths: np.ndarray, window: int, stride: int,
                  batch_size: int):
    """fn over the sliding windows of every record, cut batch by batch (no copy of all windows):
    (fn's outputs [M, ...] or a dict of them, owner [M])."""
    owner, starts = sliding_windows(lengths, window, stride)
    cut = lambda first, stop: cut_windows(x, owner[first:stop], starts[first:stop], window, lengths)  # noqa: E731
    return batched_apply(fn, cut, min(batch_size, owner.size), num=owner.size), owner


def aggregate(values: np.ndarray, owner: np.ndarray, num_records: int, how: str = "mean") -> np.ndarray:
    """Per-record mean or max of window values [M, ...] -> [num_records, ...] (NaN where none)."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {how!r}")
    values = np.asarray(values, np.float64)
    owner = np.asarray(owner, np.int64)
    out = np.full((num_records, *values.shape[1:]), np.nan)
    if how == "mean":
        sums = np.zeros_like(out)
        np.add.at(sums, owner, values)
        counts = np.bincount(owner, minlength=num_records).reshape(-1, *([1] * (values.ndim - 1)))
        np.divide(sums, counts, out=out, where=counts > 0)
        return out
    out[:] = -np.inf
    np.maximum.at(out, owner, values)
    out[np.isneginf(out)] = np.nan
    return out
