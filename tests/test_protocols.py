"""Label-scarcity protocols: patient integrity, fractions, prevalence, determinism, nesting."""
import numpy as np
import pandas as pd
import pytest

from ecgjax.eval.protocols import case_ratio_subsample, prevalence, subsample_patients


def _cohort(n_patients=400, seed=0, positive_share=0.25):
    """Records per patient 1-4; a patient's records share its label (like a PTB-XL superclass)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 5, n_patients)
    patient_ids = np.repeat(np.arange(1000, 1000 + n_patients), counts)
    patient_label = rng.random(n_patients) < positive_share
    labels = np.repeat(patient_label, counts).astype(int)
    return pd.DataFrame({"patient_id": patient_ids, "label": labels, "record": np.arange(counts.sum())})


def _no_patient_split(patient_ids, mask):
    selected = set(patient_ids[mask])
    unselected = set(patient_ids[~mask])
    return not (selected & unselected)


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.10, 0.25, 0.50, 1.0])
def test_subsample_patients_fraction_and_integrity(fraction):
    df = _cohort()
    mask = subsample_patients(df, fraction, seed=3)
    ids = df.patient_id.to_numpy()
    assert _no_patient_split(ids, mask)
    n_patients = np.unique(ids).size
    assert np.unique(ids[mask]).size == max(1, round(fraction * n_patients))
    assert abs(mask.mean() - fraction) < 0.05  # records follow patients within tolerance


def test_subsample_patients_deterministic_nested_and_seed_dependent():
    df = _cohort()
    ids = df.patient_id.to_numpy()
    masks = [subsample_patients(ids, f, seed=11) for f in (0.05, 0.10, 0.25, 0.5)]
    for small, large in zip(masks, masks[1:]):
        assert not (small & ~large).any()
    assert np.array_equal(subsample_patients(ids, 0.1, seed=11), masks[1])
    assert not np.array_equal(subsample_patients(ids, 0.1, seed=12), masks[1])
    # Shuffling the records does not change which patients are chosen.
    shuffled = df.sample(frac=1.0, random_state=0)
    chosen = set(shuffled.patient_id[subsample_patients(shuffled, 0.1, seed=11)])
    assert chosen == set(ids[masks[1]])


def test_subsample_patients_keeps_both_classes_when_labels_given():
    df = _cohort(n_patients=300, positive_share=0.02, seed=5)
    for seed in range(10):
        mask = subsample_patients(df, 0.01, seed=seed, labels=df.label)
        assert set(df.label[mask]) == {0, 1}
        assert _no_patient_split(df.patient_id.to_numpy(), mask)
    nested_small = subsample_patients(df, 0.01, seed=1, labels=df.label)
    nested_large = subsample_patients(df, 0.1, seed=1, labels=df.label)
    assert not (nested_small & ~nested_large).any()


@pytest.mark.parametrize("ratio", [0.01, 0.02, 0.05])
def test_case_ratio_hits_prevalence_and_keeps_negatives(ratio):
    df = _cohort(n_patients=3000, seed=2)
    labels, ids = df.label.to_numpy(), df.patient_id.to_numpy()
    mask = case_ratio_subsample(labels, ids, ratio, seed=4)
    assert _no_patient_split(ids, mask)
    assert mask[labels == 0].all()  # all negatives kept
    # One positive patient holds at most 4 records: prevalence is within that granularity.
    assert abs(prevalence(labels, mask) - ratio) <= 4 / mask.sum()
    assert np.array_equal(mask, case_ratio_subsample(labels, ids, ratio, seed=4))


def test_case_ratio_nested_and_edge_cases():
    df = _cohort(n_patients=3000, seed=2)
    labels, ids = df.label.to_numpy(), df.patient_id.to_numpy()
    m1, m2, m5 = (case_ratio_subsample(labels, ids, r, seed=0) for r in (0.01, 0.02, 0.05))
    assert not (m1 & ~m2).any() and not (m2 & ~m5).any()
    with pytest.warns(UserWarning):
        assert case_ratio_subsample(labels, ids, 0.9, seed=0).all()
    with pytest.raises(ValueError):
        case_ratio_subsample(np.zeros_like(labels), ids, 0.05, seed=0)
    with pytest.raises(ValueError):
        subsample_patients(ids, 0.0, seed=0)
