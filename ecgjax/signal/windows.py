"""Windows over recordings: one grid, one way to cut them out.

    starts = window_starts(num_samples, fs, window_s, stride_s)   # one recording, in seconds
    owner, starts = sliding_windows(lengths, window, stride)        # a batch of records, in samples
    windows = cut_windows(x, owner, starts, window, lengths)        # [M, window, leads]
    windows = extract_windows(signal, starts, window)              # one recording [time, leads]
    crops = random_crops(x, lengths, window, rng)                   # [N, window, leads], fresh each call

Windows are `stride` apart from sample 0; when the regular grid leaves the end of a recording
uncovered, one more window ends exactly at its last sample (overlapping its predecessor more than
the stride says), so no sample is left out and none is read past the end. Records are rows of a
zero-padded array x [N, T, leads] with their true lengths [N]; a record shorter than the window
gets one window at 0, zero-padded at its end (`sliding_windows`), while a recording shorter than
the window has no windows at all (`window_starts`: annotation reports nothing rather than padding).
"""
from __future__ import annotations

import numpy as np


def window_length(fs: float, window_s: float) -> int:
    """Samples in a window of `window_s` seconds at `fs` Hz."""
    return int(round(window_s * fs))


def grid_starts(num_samples: int, window: int, stride: int, *, include_tail: bool = True) -> np.ndarray:
    """First sample of every `window`-sample window `stride` apart that fits in `num_samples`,
    [num_windows] int64, plus (`include_tail`) one ending at the last sample where the grid leaves
    the end uncovered; none when `num_samples` < `window`."""
    if window < 1 or stride < 1:
        raise ValueError(f"window ({window}) and stride ({stride}) must be at least one sample")
    if num_samples < window:
        return np.zeros(0, np.int64)
    starts = np.arange(0, num_samples - window + 1, stride, dtype=np.int64)
    if include_tail and starts[-1] + window < num_samples:
        starts = np.append(starts, num_samples - window)
    return starts


def window_starts(num_samples: int, fs: float, window_s: float, stride_s: float, *,
                  include_tail: bool = True) -> np.ndarray:
    """`grid_starts` of one recording of `num_samples` at `fs` Hz, window and stride in seconds."""
    window, stride = window_length(fs, window_s), window_length(fs, stride_s)
    if window < 1 or stride < 1:
        raise ValueError(f"window {window_s} s / stride {stride_s} s is under one sample at {fs} Hz")
    return grid_starts(num_samples, window, stride, include_tail=include_tail)


def sliding_windows(lengths: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(owner [M], start [M]): the windows covering each record of `lengths` [N] (`grid_starts`;
    one window at 0 for a record of at most `window` samples)."""
    if window <= 0 or stride <= 0:
        raise ValueError(f"window ({window}) and stride ({stride}) must be positive")
    starts = [grid_starts(max(int(length), window), window, stride) for length in np.asarray(lengths, np.int64)]
    owner = np.repeat(np.arange(len(starts), dtype=np.int64), [s.size for s in starts])
    return owner, np.concatenate([np.zeros(0, np.int64), *starts])


def cut_windows(x: np.ndarray, owner: np.ndarray, starts: np.ndarray, window: int,
                lengths: np.ndarray | None = None) -> np.ndarray:
    """x[owner[m], starts[m]:starts[m] + window] for each m, zero past the record's end (its
    `lengths` entry, else x's time axis).

    Args:
      x: [N, T, leads] records (a recording [T, leads] is x[None]); NaN samples are copied as NaN.
    Returns:
      [M, window, leads] float32.
    """
    owner, starts = np.asarray(owner, np.int64), np.asarray(starts, np.int64)
    out = np.zeros((owner.size, window, x.shape[2]), np.float32)
    ends = np.full(owner.size, x.shape[1]) if lengths is None else np.asarray(lengths, np.int64)[owner]
    inside = starts + window <= x.shape[1]
    if inside.any():  # one gather from a view of every window of x, [N, T - window + 1, leads, window]
        view = np.lib.stride_tricks.sliding_window_view(x, window, axis=1)
        out[inside] = view[owner[inside], starts[inside]].transpose(0, 2, 1)
    for m in np.flatnonzero(~inside):  # windows running past x's time axis (records shorter than one)
        n = max(x.shape[1] - int(starts[m]), 0)
        out[m, :n] = x[owner[m], starts[m]:starts[m] + n]
    out[np.arange(window) >= (ends - starts)[:, None]] = 0  # past each record's own end
    return out


def extract_windows(signal: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """The windows of one recording [time, leads] at `starts` [M]: `cut_windows` of signal[None],
    [M, window, leads] float32."""
    starts = np.asarray(starts, np.int64)
    return cut_windows(np.asarray(signal)[None], np.zeros_like(starts), starts, window)


def random_crops(x: np.ndarray, lengths: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
    """One `window`-sample crop per record at a uniform start in [0, length - window]: [N, window, leads]."""
    lengths = np.asarray(lengths, np.int64)
    starts = (rng.random(len(lengths)) * (np.maximum(lengths - window, 0) + 1)).astype(np.int64)
    return cut_windows(x, np.arange(len(lengths)), starts, window, lengths)
