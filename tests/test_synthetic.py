"""Tests for the synthetic cohort: determinism, lead physics, labels, and non-trivial learnability."""
import importlib.util
import pathlib
import time

import numpy as np
import pytest
import scipy.signal

from ecgjax.data.leads import CANONICAL_LEADS
from ecgjax.data.synthetic import CONDITIONS, generate_cohort, generate_patient_records

_BASELINE = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "synthetic_baseline.py"


def _lead(record, name):
    return record.signal[:, CANONICAL_LEADS.index(name)]


def test_same_seed_same_arrays_other_seed_differs():
    a = generate_cohort(num_patients=3, records_per_patient=2, seed=7)
    b = generate_cohort(num_patients=3, records_per_patient=2, seed=7)
    c = generate_cohort(num_patients=3, records_per_patient=2, seed=8)
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(ra.signal, rb.signal)
        assert ra.metadata == rb.metadata
    assert not np.allclose(a[0].signal, c[0].signal)


def test_patient_does_not_depend_on_cohort_size():
    cohort = generate_cohort(num_patients=5, records_per_patient=2, seed=3)
    alone = generate_patient_records(4, records_per_patient=2, seed=3)
    np.testing.assert_array_equal(cohort[-1].signal, alone[-1].signal)


def test_record_fields():
    records = generate_cohort(num_patients=4, records_per_patient=3, fs=100.0, duration_s=5.0)
    assert len(records) == 12
    assert len({r.record_id for r in records}) == 12
    assert records[0].patient_id == "syn00000" and records[-1].patient_id == "syn00003"
    for r in records:
        assert r.signal.shape == (500, 12) and r.signal.dtype == np.float32
        assert r.fs == 100.0 and r.lead_names == CANONICAL_LEADS and r.source == "synthetic"
        assert np.isfinite(r.signal).all() and 0.1 < np.abs(r.signal).max() < 10.0
        md = r.metadata
        assert md["conditions"] == ([c for c in CONDITIONS if md[c]] or ["normal"])
        assert md["normal"] == int(md["conditions"] == ["normal"])
        assert 18 <= md["age"] <= 90 and md["sex"] in ("M", "F") and 30 < md["heart_rate"] < 160


def test_limb_leads_obey_einthoven_and_goldberger():
    record = generate_cohort(num_patients=1, records_per_patient=1)[0]
    i, ii = _lead(record, "I"), _lead(record, "II")
    np.testing.assert_allclose(_lead(record, "III"), ii - i, atol=1e-5)
    np.testing.assert_allclose(_lead(record, "aVR"), -(i + ii) / 2, atol=1e-5)
    np.testing.assert_allclose(_lead(record, "aVL"), i - ii / 2, atol=1e-5)
    np.testing.assert_allclose(_lead(record, "aVF"), ii - i / 2, atol=1e-5)


def test_labels_are_patient_level_with_moderate_prevalence():
    records = generate_cohort(num_patients=400, records_per_patient=2, duration_s=2.0)
    labels = np.array([[r.metadata[c] for c in CONDITIONS] for r in records])
    np.testing.assert_array_equal(labels[0::2], labels[1::2])  # both records of a patient agree
    prevalence = labels.mean(0)
    assert ((prevalence > 0.08) & (prevalence < 0.3)).all(), dict(zip(CONDITIONS, prevalence))


def test_patient_identity_is_recoverable_from_the_signal():
    # Median-beat-free check: the amplitude profile across leads is closer within a patient than across.
    records = generate_cohort(num_patients=20, records_per_patient=2)
    profile = np.stack([np.percentile(r.signal, 99, axis=0) - np.percentile(r.signal, 1, axis=0) for r in records])
    profile /= np.linalg.norm(profile, axis=1, keepdims=True)
    first, second = profile[0::2], profile[1::2]
    nearest = np.argmax(first @ second.T, axis=1)
    assert np.mean(nearest == np.arange(20)) > 0.5


def _rr_variation(record):
    slope = np.abs(np.diff(record.signal, axis=0)).sum(1)
    peaks, _ = scipy.signal.find_peaks(slope, distance=int(0.3 * record.fs), height=0.5 * slope.max())
    rr = np.diff(peaks)
    return rr.std() / rr.mean()


def test_afib_records_have_irregular_rr_and_faster_rate():
    records = generate_cohort(num_patients=80, records_per_patient=1)
    afib = np.array([r.metadata["afib"] for r in records], bool)
    variation = np.array([_rr_variation(r) for r in records])
    rate = np.array([r.metadata["heart_rate"] for r in records])
    assert afib.sum() >= 5
    assert np.median(variation[afib]) > 2 * np.median(variation[~afib])
    assert rate[afib].mean() > rate[~afib].mean()


def test_generation_is_fast():
    start = time.perf_counter()
    generate_cohort(num_patients=100, records_per_patient=4)
    assert time.perf_counter() - start < 5.0  # ~0.4 s unloaded; generous for shared CPUs


@pytest.fixture(scope="module")
def baseline():
    spec = importlib.util.spec_from_file_location("synthetic_baseline", _BASELINE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_conditions_are_learnable_but_not_trivial(baseline):
    records = generate_cohort(num_patients=300, records_per_patient=2, seed=0)
    scores = baseline.baseline_auroc(records, seed=0)
    for condition, auroc in scores.items():
        assert 0.55 < auroc < 0.995, (condition, scores)
