"""Downstream metrics, bootstrap confidence intervals and seed aggregation.

Definitions (all scores are "higher = more positive"; probabilities or logits both work
for the ranking metrics, thresholded metrics assume probabilities):

- AUROC, AUPRC: sklearn `roc_auc_score` and `average_precision_score` (AUPRC is average
  precision, the step-wise area of 003 App. B.1).
- criteria (003, Tables 4-9): the plain sum of AUROC and AUPRC over the four PTB-XL
  superclass tasks MI, STTC, CD, HYP, i.e. 4 AUROC + 4 AUPRC, range [0, 8].
  e.g. 003 App. C Table 4 row 0: .7653+.7573+.7443+.7811+.5147+.4614+.4073+.2922 = 4.7236.
- F1 at 0.5: sklearn `f1_score` on `y_score >= threshold`.
- Fmax: binary tasks: the largest F1 over all thresholds of the precision-recall curve.
  Multi-label tasks: the sample-centric Fmax of Strodthoff et al. (PTB-XL benchmark, after
  CAFA): for each threshold t, precision is averaged over samples with at least one label
  predicted >= t, recall over samples with at least one true label, and
  Fmax = max_t 2 P(t) R(t) / (P(t) + R(t)).
- macro F1 (001, PhysioNet/CinC 2017): the unweighted mean of per-class F1 over the classes
  in `labels` (001 averages all four of N, A, O, ~: (.898+.711+.701+.613)/4 = .731).
- challenge F1 (PhysioNet/CinC 2017's official score, Clifford et al. 2017): the mean F1 of
  N, A and O; the noise class ~ is predicted but not scored (001's row above: (.898+.711+.701)/3
  = .770). Added to a multiclass task's metrics when its classes are CinC 2017's.
- macro AUROC (multi-label): mean over classes of the one-vs-rest AUROC, classes whose
  column has a single value are left out with a warning (sklearn would raise).
- MAE, R^2: sklearn `mean_absolute_error`, `r2_score`.

Degenerate input (a single class in `y_true`, no samples) gives NaN with a
`DegenerateMetricWarning`, never an exception, so one empty bootstrap resample or a
tiny fraction cannot crash a sweep.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from sklearn import metrics as skm

from ecgjax.data.sources.cinc2017 import CINC2017_CLASSES
from ecgjax.data.sources.ptbxl import PTBXL_SUPERCLASSES
from ecgjax.downstream.heads import TASK_TYPES

# 003's criteria tasks: the PTB-XL superclasses but NORM.
CRITERIA_TASKS: tuple[str, ...] = tuple(c for c in PTBXL_SUPERCLASSES if c != "NORM")
# The classes CinC 2017's challenge score averages F1 over (noise, '~', is left out).
CINC2017_SCORED: tuple[str, ...] = ("N", "A", "O")


class DegenerateMetricWarning(UserWarning):
    """A metric is undefined for the given labels (e.g. only one class present)."""


def _nan(reason: str) -> float:
    warnings.warn(reason, DegenerateMetricWarning, stacklevel=3)
    return float("nan")


def _binary_arrays(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).astype(int).ravel()
    y_score = np.asarray(y_score, dtype=np.float64).ravel()
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true {y_true.shape} and y_score {y_score.shape} differ in length")
    return y_true, y_score


def _has_both_classes(y_true: np.ndarray) -> bool:
    return y_true.size > 0 and np.unique(y_true).size == 2


# ---------------------------------------------------------------------------- binary

def auroc(y_true, y_score) -> float:
    """Area under the ROC curve. y_true: [N] in {0,1}, y_score: [N]."""
    y_true, y_score = _binary_arrays(y_true, y_score)
    if not _has_both_classes(y_true):
        return _nan("AUROC undefined: y_true holds a single class")
    return float(skm.roc_auc_score(y_true, y_score))


def auprc(y_true, y_score) -> float:
    """Area under the precision-recall curve as average precision. [N], [N]."""
    y_true, y_score = _binary_arrays(y_true, y_score)
    if not _has_both_classes(y_true):
        return _nan("AUPRC undefined: y_true holds a single class")
    return float(skm.average_precision_score(y_true, y_score))


def f1_at_threshold(y_true, y_score, threshold: float = 0.5) -> float:
    """F1 of the positive class with predictions `y_score >= threshold`. [N], [N]."""
    y_true, y_score = _binary_arrays(y_true, y_score)
    if y_true.sum() == 0:
        return _nan("F1 undefined: y_true holds no positive")
    return float(skm.f1_score(y_true, (y_score >= threshold).astype(int), zero_division=0))


def fmax(y_true, y_score) -> float:
    """Max F1 over thresholds.

    y_true, y_score: [N] (binary: max over the precision-recall curve) or [N, C]
    (multi-label: sample-centric Fmax of the PTB-XL benchmark, see module docstring).
    """
    y_true = np.asarray(y_true)
    if y_true.ndim == 2:
        return _sample_centric_fmax(y_true.astype(bool), np.asarray(y_score, dtype=np.float64))
    y_true, y_score = _binary_arrays(y_true, y_score)
    if y_true.sum() == 0:
        return _nan("Fmax undefined: y_true holds no positive")
    precision, recall, _ = skm.precision_recall_curve(y_true, y_score)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(f1.max())


def _sample_centric_fmax(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """[N, C] bool, [N, C] -> Fmax over every distinct score used as a threshold."""
    has_label = y_true.any(axis=1)
    if not has_label.any():
        return _nan("Fmax undefined: no sample has a true label")
    y_true, y_score = y_true[has_label], y_score[has_label]
    thresholds = np.unique(y_score)
    if thresholds.size > 1000:  # an even grid of quantiles is enough to find the max
        thresholds = np.unique(np.quantile(y_score, np.linspace(0.0, 1.0, 1001)))
    n_true = y_true.sum(axis=1)
    best = 0.0
    for t in thresholds:
        predicted = y_score >= t
        n_pred = predicted.sum(axis=1)
        tp = (predicted & y_true).sum(axis=1)
        covered = n_pred > 0
        if not covered.any():
            continue
        precision = float(np.mean(tp[covered] / n_pred[covered]))
        recall = float(np.mean(tp / n_true))
        if precision + recall > 0:
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


# ---------------------------------------------------------------------- multi-class/label

def macro_f1(y_true, y_score, labels: Sequence | None = None) -> float:
    """Unweighted mean F1 over `labels` (default: classes present in y_true or predicted).

    y_true: [N] class indices; y_score: [N, K] scores (argmax taken) or [N] predicted classes.
    """
    y_true = np.asarray(y_true).ravel()
    y_score = np.asarray(y_score)
    y_pred = y_score.argmax(axis=1) if y_score.ndim == 2 else y_score.ravel()
    if y_true.size == 0:
        return _nan("macro F1 undefined: no samples")
    return float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def per_class_f1(y_true, y_score, labels: Sequence) -> dict:
    """F1 of each class in `labels` ({label: F1}); shapes as in `macro_f1`."""
    y_true = np.asarray(y_true).ravel()
    y_score = np.asarray(y_score)
    y_pred = y_score.argmax(axis=1) if y_score.ndim == 2 else y_score.ravel()
    values = skm.f1_score(y_true, y_pred, labels=list(labels), average=None, zero_division=0)
    return {label: float(v) for label, v in zip(labels, values)}


def is_cinc2017(class_names: Sequence[str] | None) -> bool:
    """Are these a multiclass task's CinC 2017 classes (N, A, O, ~ in any order)?"""
    return class_names is not None and sorted(class_names) == sorted(CINC2017_CLASSES)


def challenge_f1(y_true, y_score, class_names: Sequence[str]) -> float:
    """CinC 2017's score: mean F1 of N, A and O. y_true [N] class indices into class_names;
    y_score [N, K] scores (argmax taken) or [N] predicted classes (a prediction of '~' counts as a
    miss of the true class, never as a hit)."""
    names = list(class_names)
    return macro_f1(y_true, y_score, labels=[names.index(c) for c in CINC2017_SCORED])


def macro_auroc(y_true, y_score) -> float:
    """Mean one-vs-rest AUROC over the columns of [N, C] multi-hot y_true / scores y_score.

    Columns with a single class are skipped (with a warning); all skipped gives NaN.
    """
    y_true = np.asarray(y_true).astype(int)
    y_score = np.asarray(y_score, dtype=np.float64)
    usable = [c for c in range(y_true.shape[1]) if _has_both_classes(y_true[:, c])]
    if len(usable) < y_true.shape[1]:
        warnings.warn(f"macro AUROC: {y_true.shape[1] - len(usable)} class column(s) with a "
                      "single class left out", DegenerateMetricWarning, stacklevel=2)
    if not usable:
        return float("nan")
    return float(skm.roc_auc_score(y_true[:, usable], y_score[:, usable], average="macro"))


def criteria(per_task: Mapping[str, Mapping[str, float]],
             tasks: Sequence[str] = CRITERIA_TASKS) -> float:
    """003's criteria: sum of AUROC and AUPRC over `tasks`. per_task: {task: {'auroc', 'auprc'}}.

    NaN when a task or one of its two metrics is missing.
    """
    total = 0.0
    for task in tasks:
        values = per_task.get(task, {})
        for name in ("auroc", "auprc"):
            value = values.get(name)
            if value is None or not math.isfinite(value):
                return float("nan")
            total += float(value)
    return total


# ---------------------------------------------------------------------------- regression

def mae(y_true, y_pred) -> float:
    """Mean absolute error, [N] or [N, D] (averaged over outputs)."""
    if np.asarray(y_true).size == 0:
        return _nan("MAE undefined: no samples")
    return float(skm.mean_absolute_error(y_true, y_pred))


def r2(y_true, y_pred) -> float:
    """Coefficient of determination; NaN for fewer than two samples or constant y_true."""
    y_true = np.asarray(y_true, dtype=np.float64)
    if y_true.shape[0] < 2 or np.allclose(y_true, y_true.reshape(y_true.shape[0], -1)[0]):
        return _nan("R^2 undefined: fewer than two samples or constant y_true")
    return float(skm.r2_score(y_true, y_pred))


# ------------------------------------------------------------------------------ dispatch

def compute_metrics(task_type: str, y_true, y_score, *, class_names: Sequence[str] | None = None,
                    threshold: float = 0.5) -> dict[str, float]:
    """All metrics of one task type as a flat {name: value} dict.

    binary:     y_true [N] {0,1}, y_score [N] probability -> auroc, auprc, f1, fmax.
    multiclass: y_true [N] class index, y_score [N, K] -> macro_f1, accuracy, macro_auroc
                (one-vs-rest, NaN unless every class is present) and f1/<name> per class;
                with CinC 2017's class names, `challenge_f1` is added.
    multilabel: y_true [N, C] multi-hot, y_score [N, C] -> macro_auroc, macro_auprc, fmax and
                auroc/<name>, auprc/<name> per class (class_names default to column indices).
                With class_names MI, STTC, CD, HYP, `criteria` is added.
    regression: y_true [N] or [N, D], y_score the prediction -> mae, r2.
    """
    if task_type == "binary":
        return {"auroc": auroc(y_true, y_score), "auprc": auprc(y_true, y_score),
                "f1": f1_at_threshold(y_true, y_score, threshold), "fmax": fmax(y_true, y_score)}
    if task_type == "multiclass":
        y_true = np.asarray(y_true).ravel()
        y_score = np.asarray(y_score, dtype=np.float64)
        n_classes = y_score.shape[1]
        names = list(class_names) if class_names is not None else [str(k) for k in range(n_classes)]
        out = {"macro_f1": macro_f1(y_true, y_score, labels=list(range(n_classes))),
               "accuracy": float(skm.accuracy_score(y_true, y_score.argmax(axis=1)))}
        if np.unique(y_true).size == n_classes:
            out["macro_auroc"] = float(skm.roc_auc_score(
                y_true, _softmax(y_score), multi_class="ovr", average="macro"))
        else:
            out["macro_auroc"] = _nan("multi-class AUROC undefined: a class is absent from y_true")
        for k, value in per_class_f1(y_true, y_score, range(n_classes)).items():
            out[f"f1/{names[k]}"] = value
        if is_cinc2017(names):
            out["challenge_f1"] = challenge_f1(y_true, y_score, names)
        return out
    if task_type == "multilabel":
        y_true = np.asarray(y_true).astype(int)
        y_score = np.asarray(y_score, dtype=np.float64)
        names = list(class_names) if class_names is not None else [str(k) for k in range(y_true.shape[1])]
        out = {}
        for c, name in enumerate(names):
            out[f"auroc/{name}"] = auroc(y_true[:, c], y_score[:, c])
            out[f"auprc/{name}"] = auprc(y_true[:, c], y_score[:, c])
        out["macro_auroc"] = _nanmean([out[f"auroc/{n}"] for n in names])
        out["macro_auprc"] = _nanmean([out[f"auprc/{n}"] for n in names])
        out["fmax"] = fmax(y_true, y_score)
        if set(CRITERIA_TASKS) <= set(names):
            out["criteria"] = criteria({n: {"auroc": out[f"auroc/{n}"], "auprc": out[f"auprc/{n}"]}
                                        for n in CRITERIA_TASKS})
        return out
    if task_type == "regression":
        return {"mae": mae(y_true, y_score), "r2": r2(y_true, y_score)}
    raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-normalise scores into probabilities (sklearn's multi-class AUROC wants rows summing to 1)."""
    if np.all(logits >= 0) and np.allclose(logits.sum(axis=1), 1.0):
        return logits
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


# ------------------------------------------------------------------------------ bootstrap

def bootstrap_ci(metric_fn: Callable[[np.ndarray, np.ndarray], float], y_true, y_score, *,
                 n: int = 1000, seed: int = 0, patient_ids=None,
                 confidence: float = 0.95) -> dict[str, float]:
    """Percentile bootstrap confidence interval of `metric_fn(y_true, y_score)`.

    y_true, y_score: arrays whose first axis is the sample axis. With `patient_ids` [N],
    whole patients are resampled (their records travel together), so correlated records
    of one patient do not narrow the interval. Resamples on which the metric is undefined
    (a class absent -> NaN) are skipped; the number kept is reported as `n_valid`.

    Returns {'point', 'lower', 'upper', 'n_valid'}.
    """
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateMetricWarning)
        point = float(metric_fn(y_true, y_score))
    rng = np.random.default_rng(seed)
    if patient_ids is None:
        groups = [np.array([i]) for i in range(len(y_true))]
    else:
        patient_ids = np.asarray(patient_ids)
        if len(patient_ids) != len(y_true):
            raise ValueError("patient_ids and y_true differ in length")
        _, inverse = np.unique(patient_ids, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        groups = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
    stats = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateMetricWarning)
        for _ in range(n):
            picked = rng.integers(0, len(groups), size=len(groups))
            idx = np.concatenate([groups[g] for g in picked])
            value = float(metric_fn(y_true[idx], y_score[idx]))
            if math.isfinite(value):
                stats.append(value)
    if not stats:
        return {"point": point, "lower": float("nan"), "upper": float("nan"), "n_valid": 0}
    tail = (1.0 - confidence) / 2 * 100
    lower, upper = np.percentile(stats, [tail, 100 - tail])
    return {"point": point, "lower": float(lower), "upper": float(upper), "n_valid": len(stats)}


def aggregate_runs(runs: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (ddof=1) over runs (e.g. seeds) per metric name.

    runs: list of {metric: value}. Non-finite values are left out of that metric;
    returns {metric: {'mean', 'std', 'n'}} with std NaN when fewer than two values.
    """
    names = sorted({name for run in runs for name in run})
    out = {}
    for name in names:
        values = np.array([run[name] for run in runs
                           if name in run and run[name] is not None and math.isfinite(run[name])],
                          dtype=np.float64)
        out[name] = {"mean": float(values.mean()) if values.size else float("nan"),
                     "std": float(values.std(ddof=1)) if values.size > 1 else float("nan"),
                     "n": int(values.size)}
    return out
