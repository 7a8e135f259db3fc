"""Embedding plot and patient identification accuracy (000 §5.1); the diagnose entry point's memory."""
import json
import math

import numpy as np
import pytest

import entry_points
from ecgjax.eval.diagnostics import embedding_plot, patient_identification_accuracy
from ecgjax.eval.task_data import load_task_arrays


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


def test_diagnose_reads_the_store_one_batch_at_a_time(pretrained_run, tmp_path, monkeypatch):
    """experiments/diagnose.py held every record of the three splits in memory at once (3.5 GB peak
    on PTB-XL): now the windows come from the store one encoder batch at a time, whatever the size
    of the split (the same results on PTB-XL: see the commit)."""
    from ecgjax.eval import diagnose

    read = []

    def recording(store, task, records, **kwargs):
        read.append(len(records))
        return load_task_arrays(store, task, records, **kwargs)

    monkeypatch.setattr(diagnose, "_BATCH", 4)
    monkeypatch.setattr(diagnose, "load_task_arrays", recording)
    result = entry_points.run("experiments/diagnose.py", f"--checkpoint={pretrained_run}", "--task=wide_qrs",
                              f"--output={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr
    out = json.loads((tmp_path / "out" / "diagnostics.json").read_text())
    # 24 patients x 2 records: val, train and test each read in batches of at most 4 records.
    assert max(read) <= 4 and sum(read) > out["n_val"] > 4
    assert out["patient_identification"]["records"] > 0 and "risk_decomposition" in out
