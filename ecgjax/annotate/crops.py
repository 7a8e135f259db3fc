"""Random crops of short records, each labelled from the beats inside the crop.

A crop's heart rate is not its record's: an 8 s crop of a 10 s record with sinus arrhythmia or an
ectopic beat near one end has its own mean rate. The label is computed exactly as the reference
track is on annotated recordings (heart_rate.heart_rate_from_beats with no margin: the mean
instantaneous rate 60 / RR of the RR intervals whose two beats lie inside the crop), so the bpm
head learns the quantity it is scored on.
"""
from __future__ import annotations

import numpy as np

from ecgjax.signal.heart_rate import heart_rate_from_beats


def random_starts(rng: np.random.Generator, record_length: int, crop_length: int, num: int) -> np.ndarray:
    """[num] int64 first samples of crops drawn uniformly from a record of `record_length` samples."""
    if crop_length > record_length:
        raise ValueError(f"crop of {crop_length} samples is longer than the {record_length}-sample record")
    return rng.integers(0, record_length - crop_length + 1, num).astype(np.int64)


def crop_windows(signals: np.ndarray, rows: np.ndarray, columns: np.ndarray, starts: np.ndarray,
                 length: int) -> np.ndarray:
    """Cuts one single-lead crop per item.

    Args:
      signals: [records, time, leads].
      rows, columns, starts: [N] record index, lead column and first sample of each crop.
    Returns:
      [N, length] crops, same dtype as `signals`.
    """
    time_index = np.asarray(starts, np.int64)[:, None] + np.arange(length)
    return signals[np.asarray(rows)[:, None], time_index, np.asarray(columns)[:, None]]


def crop_heart_rate(beats: list, rows: np.ndarray, starts: np.ndarray, length: int, fs: float,
                    beat_fs: float) -> np.ndarray:
    """[N] float32 bpm of each crop from the beats inside it (NaN with fewer than 2 beats).

    beats: per record, sorted beat positions in samples at `beat_fs`; starts and length are in
    samples at `fs` (the crop's own rate).
    """
    ratio = beat_fs / fs
    bpm = np.full(len(rows), np.nan, np.float32)
    for i, (row, start) in enumerate(zip(rows, starts)):
        bpm[i] = heart_rate_from_beats(beats[row], beat_fs, np.array([int(round(start * ratio))]),
                                       int(round(length * ratio)))[0]
    return bpm
