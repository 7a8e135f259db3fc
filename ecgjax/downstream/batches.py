"""Fixed-size batches: a jitted function applied to any number of rows compiles once."""
from __future__ import annotations

from typing import Callable

import numpy as np


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
