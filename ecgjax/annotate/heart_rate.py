"""Heart-rate labels of every window of a recording, for the annotation heads: 001's classes
(ecgjax.signal.heart_rate) from the beats a QRS detector finds, noise where the window's quality
flags (ecgjax.annotate.windows) reject it.
"""
from __future__ import annotations

import numpy as np

from ecgjax.annotate.windows import window_quality
from ecgjax.signal.heart_rate import detect_qrs, heart_rate_class, heart_rate_from_beats
from ecgjax.signal.windows import extract_windows, window_length, window_starts


def auto_label_heart_rate(signal: np.ndarray, fs: float, window_s: float, stride_s: float, *,
                          lead: int = 0, margin_s: float = 1.0, method: str = "xqrs") -> dict[str, np.ndarray]:
    """Heart-rate pretext labels for every window of a recording.

    Args:
      signal: [time, leads] mV.
      lead: column the QRS detector runs on.
      margin_s: seconds added at both ends of a window when counting beats (001 uses 1 s).
    Returns:
      dict: 'starts' [N] int64, 'bpm' [N] float64 (NaN when unknown), 'hr_class' [N] int64 (0–3),
      'valid' [N] bool (window quality of the detected lead; invalid windows are class 3, noise).
    """
    signal = np.asarray(signal, np.float32)
    if signal.ndim != 2:
        raise ValueError(f"signal must be [time, leads], got shape {signal.shape}")
    starts = window_starts(signal.shape[0], fs, window_s, stride_s)
    length = window_length(fs, window_s)
    column = signal[:, [lead]]
    valid = window_quality(extract_windows(column, starts, length), fs)["valid"] if starts.size else np.zeros(0, bool)
    beats = detect_qrs(column[:, 0], fs, method=method)
    bpm = heart_rate_from_beats(beats, fs, starts, length, margin=int(round(margin_s * fs)))
    bpm = np.where(valid, bpm, np.nan)
    return {"starts": starts, "bpm": bpm, "hr_class": heart_rate_class(bpm, ~valid), "valid": valid}
