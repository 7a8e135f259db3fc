"""Per-window quality flags of the windows annotation cuts (ecgjax.signal.windows).

A window the quality flags reject (missing data, a flat lead, a saturated amplifier) gets NaN
outputs downstream: a model's answer on such input is garbage that looks like a real answer.
"""
from __future__ import annotations

import numpy as np

from ecgjax.data.preprocess import OUT_OF_RANGE_MV


def _has_run(mask: np.ndarray, run: int) -> np.ndarray:
    """[N, L, C] bool -> [N, C] bool: somewhere `run` consecutive True samples along time."""
    run = max(int(run), 1)
    if mask.shape[1] < run:
        return np.zeros((mask.shape[0], mask.shape[2]), bool)
    counts = np.concatenate([np.zeros_like(mask[:, :1], np.int32), np.cumsum(mask, axis=1, dtype=np.int32)], axis=1)
    return ((counts[:, run:] - counts[:, :-run]) == run).any(axis=1)


def lead_quality(windows: np.ndarray, fs: float, *, gap_min_s: float = 0.1, flat_std_mv: float = 0.01,
                 flat_run_s: float = 1.0, saturation_min_s: float = 0.03,
                 max_abs_mv: float = OUT_OF_RANGE_MV) -> dict[str, np.ndarray]:
    """Each lead's problems in each window (the thresholds are `window_quality`'s).

    Args:
      windows: [num_windows, time, leads] in mV, NaN where samples are missing.
    Returns:
      dict of [num_windows, leads] bool: 'gap', 'flat', 'saturated'.
    """
    windows = np.asarray(windows, np.float32)
    missing = np.isnan(windows)
    filled = np.where(missing, np.float32(0), windows)
    gap = missing.any(axis=1) | _has_run(filled == 0, gap_min_s * fs)
    at_extreme = (filled == filled.max(axis=1, keepdims=True)) | (filled == filled.min(axis=1, keepdims=True))
    lead_flat = filled.std(axis=1) < flat_std_mv
    # A flat lead sits at its own extreme everywhere; it is already flagged as flat.
    plateau = _has_run(at_extreme & ~missing, max(saturation_min_s * fs, 3)) & ~lead_flat
    held = (np.diff(filled, axis=1) == 0) & (filled[:, 1:] != 0) & ~missing[:, 1:]
    flat = lead_flat | _has_run(held, flat_run_s * fs)
    saturated = (np.abs(filled) > max_abs_mv).any(axis=1) | plateau
    return {"gap": gap, "flat": flat, "saturated": saturated}


def window_quality(windows: np.ndarray, fs: float, *, lead_mask=None, **thresholds) -> dict[str, np.ndarray]:
    """Flags windows that cannot be annotated: a problem in any judged lead.

    Args:
      windows: [num_windows, time, leads] in mV, NaN where samples are missing.
      fs: sampling rate of `windows`.
      lead_mask: [leads] bool, leads to judge (absent, zero-filled leads are ignored); default all.
      thresholds (`lead_quality`'s keywords):
      gap_min_s: a run of exact zeros this long counts as missing data (dropped telemetry packets).
      flat_std_mv: a lead whose standard deviation over the window is below this is flat (lead off).
      flat_run_s: a lead holding one non-zero value this long is flat too (a lead that came off
        mid-window; noise and baseline wander never leave real ECG unchanged for a second).
      saturation_min_s: a run this long stuck at the window's extreme value is a clipped amplifier
        (an ADC at its limit is the extreme of its window, whatever the limits are; a real
        R peak or T wave never holds the same value this long; at least 3 samples).
      max_abs_mv: any sample beyond ± this is saturated / artefact (Kite et al.'s ±60 mV rule).
    Returns:
      dict of [num_windows] bool: 'gap', 'flat', 'saturated', and 'valid' (none of them).
    """
    windows = np.asarray(windows, np.float32)
    if lead_mask is not None:
        windows = windows[:, :, np.asarray(lead_mask, bool)]
    if windows.shape[2] == 0:
        raise ValueError("window_quality needs at least one lead to judge")
    return any_lead(lead_quality(windows, fs, **thresholds))


def any_lead(per_lead: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`lead_quality`'s [num_windows, leads] flags -> [num_windows] flags (any lead) and 'valid'."""
    flags = {key: value.any(axis=1) for key, value in per_lead.items()}
    flags["valid"] = ~(flags["gap"] | flags["flat"] | flags["saturated"])
    return flags
