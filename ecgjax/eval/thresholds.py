"""Decision thresholds chosen on the validation split, for F1-type metrics on imbalanced labels.

Argmax (or 0.5) decisions favour the common classes; choosing per-class thresholds on validation
records and applying them unchanged to the test records is the usual remedy (001 reports tuned F1).

    thresholds = tune(task_type, y_val, scores_val)
    metrics = tuned_metrics(task_type, y_test, scores_test, thresholds, class_names)

binary      one probability threshold (the F1-maximising one on validation)
multilabel  one threshold per label
multiclass  one additive offset per class on log-probabilities, decision argmax(log p + offset),
            found by coordinate ascent on validation macro F1 (argmax is offset 0)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn import metrics as skm

from ecgjax.eval import metrics

_OFFSETS = np.linspace(-3.0, 3.0, 61)  # log-probability offsets tried per class (e^3 = 20x)


def best_f1_threshold(y_true, y_score) -> float:
    """The score threshold with the highest F1 (0.5 when y_true has a single class)."""
    y_true, y_score = np.asarray(y_true).astype(int).ravel(), np.asarray(y_score, np.float64).ravel()
    if y_true.min(initial=0) == y_true.max(initial=0):
        return 0.5
    precision, recall, thresholds = skm.precision_recall_curve(y_true, y_score)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def _multiclass_decisions(scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return (np.log(np.maximum(scores, 1e-12)) + offsets).argmax(axis=1)


def tune(task_type: str, y_true, scores, passes: int = 3) -> np.ndarray:
    """Thresholds (binary [1], multilabel [C]) or log-offsets (multiclass [K]) from validation
    targets and scores (shapes as in metrics.compute_metrics)."""
    scores = np.asarray(scores, np.float64)
    if task_type == "binary":
        return np.array([best_f1_threshold(y_true, scores)])
    if task_type == "multilabel":
        y_true = np.asarray(y_true)
        return np.array([best_f1_threshold(y_true[:, c], scores[:, c]) for c in range(scores.shape[1])])
    if task_type != "multiclass":
        raise ValueError(f"thresholds apply to binary, multilabel and multiclass tasks, not {task_type!r}")
    y_true = np.asarray(y_true).ravel()
    labels = list(range(scores.shape[1]))
    offsets = np.zeros(scores.shape[1])

    def macro_f1(candidate):
        return skm.f1_score(y_true, _multiclass_decisions(scores, candidate), labels=labels, average="macro",
                            zero_division=0)

    best = macro_f1(offsets)
    for _ in range(passes):
        improved = False
        for k in labels:
            for value in _OFFSETS:
                candidate = offsets.copy()
                candidate[k] = value
                score = macro_f1(candidate)
                if score > best + 1e-12:
                    best, offsets, improved = score, candidate, True
        if not improved:
            break
    return offsets


def decisions(task_type: str, scores, thresholds: np.ndarray) -> np.ndarray:
    """0/1 decisions (binary [N], multilabel [N, C]) or classes (multiclass [N]) under `thresholds`."""
    scores = np.asarray(scores, np.float64)
    if task_type == "multiclass":
        return _multiclass_decisions(scores, thresholds)
    if task_type == "binary":
        return (scores >= thresholds[0]).astype(int)
    return (scores >= thresholds[None, :]).astype(int)


def tuned_metrics(task_type: str, y_true, scores, thresholds: np.ndarray,
                  class_names: Sequence[str] = ()) -> dict[str, float]:
    """F1 of the tuned decisions: binary {'f1_tuned'}; multilabel / multiclass {'macro_f1_tuned',
    'f1_tuned/<name>' per label or class}, and 'challenge_f1_tuned' for CinC 2017's classes."""
    predicted = decisions(task_type, scores, thresholds)
    y_true = np.asarray(y_true)
    if task_type == "binary":
        return {"f1_tuned": float(skm.f1_score(y_true.astype(int), predicted, zero_division=0))}
    if task_type == "multiclass":
        per_class = skm.f1_score(y_true.ravel(), predicted, labels=list(range(len(thresholds))), average=None,
                                 zero_division=0)
    else:
        per_class = np.array([skm.f1_score(y_true[:, c].astype(int), predicted[:, c], zero_division=0)
                              for c in range(predicted.shape[1])])
    names = list(class_names) or [str(k) for k in range(len(per_class))]
    out = {"macro_f1_tuned": float(np.mean(per_class)),
           **{f"f1_tuned/{name}": float(value) for name, value in zip(names, per_class)}}
    if task_type == "multiclass" and metrics.is_cinc2017(names):
        out["challenge_f1_tuned"] = metrics.challenge_f1(y_true, predicted, names)
    return out
