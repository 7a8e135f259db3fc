"""The AF track's operating point: a threshold chosen for a sensitivity, and the rates it gives.

The threshold is chosen on validation data (PTB-XL) and carried to the recordings annotated with
it; choosing it on the test recordings would report a specificity no user gets.
"""
from __future__ import annotations

import numpy as np


def threshold_at_sensitivity(y_true, score, sensitivity: float = 0.9) -> float:
    """The highest threshold t with mean(score[y == 1] >= t) >= `sensitivity` (NaN without positives)."""
    y_true, score = np.asarray(y_true), np.asarray(score, np.float64)
    positives = np.sort(score[y_true == 1])
    if positives.size == 0:
        return float("nan")
    return float(positives[int(np.floor((1.0 - sensitivity) * positives.size + 1e-9))])


def rates_at_threshold(y_true, score, threshold: float) -> dict[str, float]:
    """{'sensitivity', 'specificity'} of `score >= threshold` (NaN where a class is absent)."""
    y_true, flagged = np.asarray(y_true), np.asarray(score, np.float64) >= threshold
    rate = lambda mask, want: float(np.mean(flagged[mask] == want)) if mask.any() else float("nan")  # noqa: E731
    return {"sensitivity": rate(y_true == 1, True), "specificity": rate(y_true == 0, False)}
