"""Fixed-size batches: a jitted function applied to any number of rows compiles once; the
shuffled batches of a training epoch (row indices, or random crops of records).

    outputs = batched_apply(fn, x, batch_size)            # fn over all rows, one compilation
    for idx in epoch_batches(n, batch_size, rng, min_steps): ...
    for x, y in crop_batches(records, window, batch_size, steps, rng): ...
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from ecgjax.signal.windows import random_crops


def batched_apply(fn: Callable, x, batch_size: int, *, num: int | None = None):
    """fn over rows in batches of exactly `batch_size` (the last one zero-padded), concatenated.

    x: an array [N, ...], or a function (first, stop) -> array [stop - first, ...] that cuts the
      rows on demand (then `num` = N), so long recordings need no copy of every window.
    fn: batch [batch_size, ...] -> array [batch_size, ...] or a dict of them.
    Returns an array [N, ...], or a dict of them.
    """
    n = len(x) if num is None else int(num)
    if n == 0:
        raise ValueError("no windows to process")
    take = x if callable(x) else (lambda first, stop: x[first:stop])
    parts = []
    for first in range(0, n, batch_size):
        chunk = np.asarray(take(first, min(first + batch_size, n)))
        count = chunk.shape[0]
        if count < batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - count, *chunk.shape[1:]), chunk.dtype)])
        out = fn(chunk)
        parts.append({k: np.asarray(v)[:count] for k, v in out.items()} if isinstance(out, dict)
                     else np.asarray(out)[:count])
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def epoch_batches(n: int, batch_size: int, rng: np.random.Generator, min_steps: int = 1) -> list[np.ndarray]:
    """Index batches of exactly batch_size from shuffled passes over n rows: one pass (the short
    tail dropped unless it is all), or as many passes as `min_steps` batches need, so an epoch of a
    small labelled set (1% of the patients) is still several optimiser steps."""
    batch_size = min(batch_size, n)
    steps = max(n // batch_size, int(min_steps))
    order = np.concatenate([rng.permutation(n) for _ in range(-(-steps * batch_size // n))])
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


def crop_batches(records, window: int, batch_size: int, steps: int, rng: np.random.Generator,
                 crops_per_record: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`steps` batches (x [batch_size, window, leads], y [batch_size, ...]) of random crops of
    records (downstream.records.Records), each record `crops_per_record` times per pass; the order
    is drawn at the first batch, each crop as its batch is made."""
    rows = len(records) * crops_per_record
    for idx in epoch_batches(rows, batch_size, rng, steps):
        idx = idx % len(records)
        yield random_crops(records.x[idx], records.lengths[idx], window, rng), records.y[idx]
