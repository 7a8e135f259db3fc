"""Label-scarcity protocols, sampled at patient level with fixed seeds.

- Data usage (003 §4.5.1: 10/25/50%; 000: 1/10%; 002: 1/5/10/50%): keep a fraction of the
  *patients* of the labelled training set and every record of each kept patient.
- Case ratio (003 §4.5.2: 1/2/5%): keep every negative patient and only as many positive
  patients as bring the record-level prevalence to the target ratio.

Both draw one seeded permutation of the patients and keep a prefix of it, so for one seed
the selections are nested: the 10% set contains the 5% set, the 2% case-ratio set contains
the 1% one. No patient is ever split between the selected and unselected parts.
Both return a boolean mask over records [N], usable on arrays and on `df[mask]`.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

DATA_FRACTIONS: tuple[float, ...] = (0.01, 0.05, 0.10, 0.25, 0.50, 1.0)
CASE_RATIOS: tuple[float, ...] = (0.01, 0.02, 0.05)


def _patient_order(patient_ids: np.ndarray, seed: int) -> np.ndarray:
    """Unique patient ids in a seeded random order (independent of record order)."""
    unique = np.unique(patient_ids)
    return unique[np.random.default_rng(seed).permutation(unique.size)]


def _patients_of(data, patient_col: str) -> np.ndarray:
    if isinstance(data, pd.DataFrame):
        if patient_col not in data.columns:
            raise KeyError(f"metadata has no patient column {patient_col!r}")
        return data[patient_col].to_numpy()
    return np.asarray(data)


def subsample_patients(data, fraction: float, seed: int, patient_col: str = "patient_id",
                       labels=None) -> np.ndarray:
    """Records of a random `fraction` of patients, as a boolean mask [N].

    data: a metadata DataFrame (patients in `patient_col`) or an array of patient ids [N].
    fraction: in (0, 1]; round(fraction * n_patients) patients are kept (at least one).
    labels: optional binary labels [N]. Then the first patient with a positive record and
      the first with a negative record (in the seeded order) are moved to the front, so any
      selection of two or more patients holds both classes and nesting still holds.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    patient_ids = _patients_of(data, patient_col)
    order = list(_patient_order(patient_ids, seed))
    if labels is not None:
        labels = np.asarray(labels).astype(bool).ravel()
        if labels.shape[0] != patient_ids.shape[0]:
            raise ValueError("labels and patient ids differ in length")
        positive_patients = set(np.unique(patient_ids[labels]).tolist())
        negative_patients = set(np.unique(patient_ids[~labels]).tolist())
        front = []
        for wanted in (positive_patients, negative_patients):
            first = next((p for p in order if p in wanted), None)
            if first is not None and first not in front:
                front.append(first)
        order = front + [p for p in order if p not in front]
    n_keep = max(1, int(round(fraction * len(order))))
    return np.isin(patient_ids, np.asarray(order[:n_keep], dtype=patient_ids.dtype))


def case_ratio_subsample(labels, patient_ids, ratio: float, seed: int) -> np.ndarray:
    """Mask [N] keeping all negative patients and enough positive patients for `ratio` prevalence.

    labels: binary [N]; patient_ids: [N]. A patient is positive if any of its records is.
    Positive patients are added in a seeded order (all their records) and the prefix whose
    record-level prevalence is closest to `ratio` is kept (at least one positive patient).
    If the natural prevalence is already at or below `ratio`, everything is kept (warning).
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    labels = np.asarray(labels).astype(bool).ravel()
    patient_ids = np.asarray(patient_ids)
    if labels.shape[0] != patient_ids.shape[0]:
        raise ValueError("labels and patient ids differ in length")
    if not labels.any():
        raise ValueError("no positive record: a case ratio cannot be set")
    if labels.mean() <= ratio:
        warnings.warn(f"natural prevalence {labels.mean():.4f} is already <= {ratio}; keeping all")
        return np.ones_like(labels)

    unique, inverse = np.unique(patient_ids, return_inverse=True)
    records_per_patient = np.bincount(inverse, minlength=unique.size)
    positives_per_patient = np.bincount(inverse, weights=labels, minlength=unique.size)
    is_positive_patient = positives_per_patient > 0
    keep = ~is_positive_patient[inverse]
    # Positive patients in the seeded order, with their record counts.
    rank = {p: i for i, p in enumerate(unique.tolist())}
    order = [p for p in _patient_order(patient_ids, seed) if is_positive_patient[rank[p]]]
    index = np.array([rank[p] for p in order])
    running_prevalence = (np.cumsum(positives_per_patient[index])
                          / (keep.sum() + np.cumsum(records_per_patient[index])))
    n_keep = int(np.argmin(np.abs(running_prevalence - ratio))) + 1
    return keep | np.isin(inverse, index[:n_keep])


def prevalence(labels, mask=None) -> float:
    """Fraction of positive records (within `mask` when given)."""
    labels = np.asarray(labels).astype(bool).ravel()
    if mask is not None:
        labels = labels[np.asarray(mask)]
    return float(labels.mean()) if labels.size else math.nan
