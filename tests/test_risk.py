"""Risk decomposition (Dubois et al. 2023) for linear probes on synthetic embeddings."""
import math

import numpy as np
import pytest

from ecgjax.eval.risk import COMPONENTS, probe_risk, risk_decomposition


def _data(n, dim=8, separation=1.0, seed=0, patients_per=2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, dim))
    x[:, 0] += separation * (2 * y - 1)
    return x, y, np.arange(n) // patients_per


def test_components_sum_to_test_risk_and_match_their_definitions():
    x_train, y_train, pid = _data(300, seed=0)
    x_test, y_test, _ = _data(100, seed=1)
    x_sup = np.c_[y_train * 3.0, np.random.default_rng(2).normal(size=(300, 2))]  # task-trained features
    out = risk_decomposition(x_train, y_train, x_test, y_test, supervised_train_embeddings=x_sup,
                             train_patient_ids=pid, seed=0)
    assert sum(out[c] for c in COMPONENTS) == pytest.approx(out["total"])
    assert out["total"] == pytest.approx(probe_risk(x_train, y_train, x_test, y_test))
    assert out["approximation"] == 0.0  # separable supervised features: zero train error
    assert out["usability"] == pytest.approx(out["risk_train_train"])
    assert 0.05 < out["total"] < 0.4  # overlapping classes, separation 1 sd


def test_useless_representation_has_large_usability_error():
    x_train, y_train, pid = _data(300, separation=0.0, seed=3)
    x_test, y_test, _ = _data(100, separation=0.0, seed=4)
    out = risk_decomposition(x_train, y_train, x_test, y_test,
                             supervised_train_embeddings=y_train[:, None] * 1.0, train_patient_ids=pid)
    assert out["usability"] > 0.3
    assert out["total"] > 0.35  # about chance on unseen patients


def test_without_supervised_encoder_approximation_is_nan():
    x_train, y_train, _ = _data(120, seed=5)
    x_test, y_test, _ = _data(40, seed=6)
    out = risk_decomposition(x_train, y_train, x_test, y_test)
    assert math.isnan(out["approximation"]) and math.isnan(out["usability"])
    assert out["probe_generalization"] + out["encoder_generalization"] + out["risk_train_train"] == \
        pytest.approx(out["total"])
