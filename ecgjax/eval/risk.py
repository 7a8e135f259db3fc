"""SSL risk decomposition for linear probes (Dubois, Hashimoto & Liang 2023; 003 §4.6.1, App. B.2).

The downstream risk of a linear probe on an SSL encoder splits into four parts, each the
difference of two risks in a table of increasingly hard settings (their
`make_risk_decomposition`, traversal down -> right -> down):

    risk of probe f trained on A, evaluated on B        A (probe train)     B (evaluation)
    R1 = supervised encoder, train-train              pretrain-train      same records
    R2 = SSL encoder, train-train                     pretrain-train      same records
    R3 = SSL encoder, probe held out                  pretrain-train \\ H  H (subset of pretrain-train)
    R4 = SSL encoder, train-test                      pretrain-train      pretrain-test

    approximation error       = R1           architecture + linear probe too weak even when
                                             the encoder is trained for the task (Bayes risk ~ 0)
    representation usability  = R2 - R1      what the SSL objective loses against supervision,
                                             with no finite-sample effect (probe scored on its own data)
    probe generalisation      = R3 - R2      finite probe training set: the probe meets new records,
                                             but the encoder has seen them in pretraining
    encoder generalisation    = R4 - R3      finite pretraining set: records of patients the
                                             encoder never saw
    total                     = R4 = sum of the four (the usual test risk)

"pretrain-train" are labelled records of patients in the encoder's pretraining split,
"pretrain-test" records of patients outside it. H is a patient-level subset of
pretrain-train of the size of the test set (at most half of the train patients), as in
Dubois et al. (`train-cmplmnt-ntest_train-sbst-ntest`). The supervised encoder of R1 is one
trained end to end on the task (the "supervised" mode); without its embeddings the
approximation and usability errors are NaN and R2 is still returned.

Risks are 0-1 error by default (Dubois et al. report error); `risk_fn(y_true, y_prob)` can
replace it, e.g. `lambda y, p: 1 - roc_auc(y, p[:, 1])`. Components may come out slightly
negative from estimation noise (003 Table 8 has several); they are returned as measured.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

RiskFn = Callable[[np.ndarray, np.ndarray], float]
COMPONENTS: tuple[str, ...] = ("approximation", "usability", "probe_generalization",
                               "encoder_generalization")


def zero_one_error(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """1 - accuracy of the most probable class. y_true [N] class ids, y_prob [N, K] (sklearn class order)."""
    return float(np.mean(np.argmax(y_prob, axis=1) != y_true))


def _fit_probe(x: np.ndarray, y: np.ndarray, C: float, seed: int):
    """A standardised multinomial logistic regression: the linear probe."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed)).fit(x, y)


def probe_risk(x_train, y_train, x_eval, y_eval, *, risk_fn: RiskFn = zero_one_error,
               C: float = 1.0, seed: int = 0) -> float:
    """Risk on (x_eval [M, D], y_eval [M]) of a linear probe trained on (x_train [N, D], y_train [N])."""
    probe = _fit_probe(np.asarray(x_train), np.asarray(y_train), C, seed)
    classes = list(probe.classes_)
    y_eval = np.asarray(y_eval)
    # Map labels to the probe's column order; a class unseen in training never matches.
    y_index = np.array([classes.index(v) if v in classes else -1 for v in y_eval.tolist()])
    return float(risk_fn(y_index, probe.predict_proba(np.asarray(x_eval))))


def _heldout_patients(patient_ids: np.ndarray, n_heldout_records: int, seed: int) -> np.ndarray:
    """Mask of train records of a seeded set of patients totalling about n_heldout_records,
    never more than half of the patients."""
    unique, inverse, counts = np.unique(patient_ids, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(unique.size)
    n_patients = int(np.searchsorted(np.cumsum(counts[order]), n_heldout_records) + 1)
    n_patients = max(1, min(n_patients, unique.size // 2))
    return np.isin(inverse, order[:n_patients])


def risk_decomposition(train_embeddings, train_labels, test_embeddings, test_labels, *,
                       supervised_train_embeddings=None, train_patient_ids=None,
                       risk_fn: RiskFn = zero_one_error, C: float = 1.0,
                       seed: int = 0) -> dict[str, float]:
    """The four risk components of a linear probe on an SSL encoder (see module docstring).

    train_embeddings [N, D]: SSL encoder features of labelled records whose patients were
      in the pretraining split; train_labels [N] class ids.
    test_embeddings [M, D], test_labels [M]: records of patients the encoder never saw.
    supervised_train_embeddings [N, D']: the same N records through an encoder trained
      end to end on the task (optional; approximation and usability are NaN without it).
    train_patient_ids [N]: held-out subset H is drawn by patient (by record if None).

    Returns {approximation, usability, probe_generalization, encoder_generalization, total,
    risk_supervised_train_train, risk_train_train, risk_probe_heldout, risk_train_test}.
    """
    x_train = np.asarray(train_embeddings, dtype=np.float64)
    y_train = np.asarray(train_labels)
    x_test = np.asarray(test_embeddings, dtype=np.float64)
    y_test = np.asarray(test_labels)
    if x_train.shape[0] != y_train.shape[0] or x_test.shape[0] != y_test.shape[0]:
        raise ValueError("embeddings and labels differ in length")
    patients = np.arange(len(y_train)) if train_patient_ids is None else np.asarray(train_patient_ids)
    kwargs = dict(risk_fn=risk_fn, C=C, seed=seed)

    if supervised_train_embeddings is not None:
        x_sup = np.asarray(supervised_train_embeddings, dtype=np.float64)
        r_sup = probe_risk(x_sup, y_train, x_sup, y_train, **kwargs)
    else:
        r_sup = float("nan")
    r_train_train = probe_risk(x_train, y_train, x_train, y_train, **kwargs)
    heldout = _heldout_patients(patients, len(y_test), seed)
    r_heldout = probe_risk(x_train[~heldout], y_train[~heldout], x_train[heldout], y_train[heldout], **kwargs)
    r_train_test = probe_risk(x_train, y_train, x_test, y_test, **kwargs)
    return {
        "approximation": r_sup,
        "usability": r_train_train - r_sup,
        "probe_generalization": r_heldout - r_train_train,
        "encoder_generalization": r_train_test - r_heldout,
        "total": r_train_test,
        "risk_supervised_train_train": r_sup,
        "risk_train_train": r_train_train,
        "risk_probe_heldout": r_heldout,
        "risk_train_test": r_train_test,
    }
