"""Windows of whole records: random crops to train on, sliding windows to score a record with.

    crops = random_crops(x, lengths, window, rng)           # [N, window, leads], fresh every epoch
    owner, starts = sliding_windows(lengths, window, stride)  # windows that cover every record
    windows = cut_windows(x, owner, starts, window)         # [M, window, leads]
    outputs, owner = apply_sliding(fn, x, lengths, window, stride, batch_size)  # fn over them, batched
    record_scores = aggregate(window_scores, owner, len(x), "mean")

Records are rows of a zero-padded array x [N, T, leads] with their true lengths [N] (samples).
A record shorter than the window is zero-padded at its end (one window); a longer one is covered by
windows `stride` apart, the last aligned to its end, so no sample is left out and none is scored
past the end.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ecgjax.downstream.batches import batched_apply

AGGREGATIONS = ("mean", "max")


def random_crops(x: np.ndarray, lengths: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
    """One `window`-sample crop per record at a uniform start in [0, length - window]: [N, window, leads]."""
    lengths = np.asarray(lengths, np.int64)
    starts = (rng.random(len(lengths)) * (np.maximum(lengths - window, 0) + 1)).astype(np.int64)
    return cut_windows(x, np.arange(len(lengths)), starts, window, lengths)


def sliding_windows(lengths: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(owner [M], start [M]): the windows covering each record, `stride` apart, the last one ending
    at the record's end (one window at 0 for a record of at most `window` samples)."""
    if window <= 0 or stride <= 0:
        raise ValueError(f"window ({window}) and stride ({stride}) must be positive")
    owners, starts = [], []
    for record, length in enumerate(np.asarray(lengths, np.int64)):
        last = max(int(length) - window, 0)
        record_starts = np.arange(0, last + 1, stride)
        if record_starts[-1] != last:
            record_starts = np.append(record_starts, last)
        owners.append(np.full(record_starts.size, record))
        starts.append(record_starts)
    return np.concatenate(owners).astype(np.int64), np.concatenate(starts).astype(np.int64)


def cut_windows(x: np.ndarray, owner: np.ndarray, starts: np.ndarray, window: int,
                lengths: np.ndarray | None = None) -> np.ndarray:
    """x[owner[m], starts[m]:starts[m] + window] for each m, zero past the record's end: [M, window, leads]."""
    owner, starts = np.asarray(owner, np.int64), np.asarray(starts, np.int64)
    out = np.zeros((owner.size, window, x.shape[2]), np.float32)
    ends = np.full(owner.size, x.shape[1]) if lengths is None else np.asarray(lengths, np.int64)[owner]
    for m, (record, start) in enumerate(zip(owner, starts)):
        n = max(min(window, int(ends[m]) - int(start)), 0)
        out[m, :n] = x[record, start:start + n]
    return out


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
