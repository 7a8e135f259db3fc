"""Embedding plot and patient identification accuracy (000 §5.1)."""
import math

import numpy as np
import pytest

from ecgjax.eval.diagnostics import embedding_plot, patient_identification_accuracy


def _clusters(n_patients=6, per_patient=8, dim=16, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_patients, dim))
    patients = np.repeat(np.arange(n_patients), per_patient)
    return centres[patients] + spread * rng.normal(size=(patients.size, dim)), patients


def test_patient_identification_perfect_for_tight_clusters_and_chance_for_noise():
    x, patients = _clusters()
    assert patient_identification_accuracy(x, patients) == 1.0
    noise = np.random.default_rng(1).normal(size=x.shape)
    assert patient_identification_accuracy(noise, patients) < 0.5


def test_patient_identification_hand_computed_and_singletons_excluded():
    # Cosine: a and b point the same way (patient 1); c alone (patient 2, not scored);
    # d is nearest to c (patient 3 twice, but d's neighbour is c, e's neighbour is d).
    x = np.array([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 1.0], [0.6, 1.0]])
    patients = np.array([1, 1, 2, 3, 3])
    # scored: a->b ok, b->a ok, d->c wrong, e->d ok => 3/4
    assert patient_identification_accuracy(x, patients) == pytest.approx(0.75)
    assert math.isnan(patient_identification_accuracy(x[:3], np.array([1, 2, 3])))


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embedding_plot_writes_png(tmp_path, method):
    x, patients = _clusters(n_patients=4, per_patient=6)
    path = embedding_plot(x, patients, tmp_path / "sub" / f"{method}.png", method=method)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError):
        embedding_plot(x, patients, tmp_path / "x.png", method="umap")
