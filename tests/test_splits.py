"""Patient-level splits: deterministic, no patient on two sides, PTB-XL folds included."""
import numpy as np
import pandas as pd
import pytest

from ecgjax.data.splits import (SplitConfig, assert_no_patient_leakage, assign_splits, fold_split,
                                hashed_patient_split)


def _records(num_patients=500, per_patient=3):
    ids = [f"p{p}" for p in range(num_patients) for _ in range(per_patient)]
    return pd.DataFrame({"patient_id": ids})


def test_hashed_split_is_patient_level_deterministic_and_sized():
    table = _records()
    splits = assign_splits(table, SplitConfig(method="hash", val_fraction=0.2, test_fraction=0.1, seed=1))
    assert table.assign(s=splits).groupby("patient_id").s.nunique().max() == 1
    np.testing.assert_array_equal(splits, assign_splits(table, SplitConfig(val_fraction=0.2, test_fraction=0.1,
                                                                           seed=1)))
    per_patient = pd.Series(splits[::3]).value_counts(normalize=True)
    assert abs(per_patient["val"] - 0.2) < 0.06 and abs(per_patient["test"] - 0.1) < 0.05
    other_seed = hashed_patient_split(table.patient_id, val_fraction=0.2, test_fraction=0.1, seed=2)
    assert (other_seed != splits).any()


def test_hashed_split_of_a_patient_does_not_depend_on_the_other_patients():
    full = hashed_patient_split([f"p{i}" for i in range(100)], seed=0)
    part = hashed_patient_split([f"p{i}" for i in range(50, 100)], seed=0)
    np.testing.assert_array_equal(full[50:], part)


def test_fold_split_and_overlapping_folds():
    out = fold_split([1, 8, 9, 10, 3], train_folds=(1, 2, 3, 4, 5, 6, 7, 8), val_folds=(9,), test_folds=(10,))
    assert list(out) == ["train", "train", "val", "test", "train"]
    assert list(fold_split([1, 2], train_folds=(1,), val_folds=(), test_folds=())) == ["train", "unused"]
    with pytest.raises(ValueError, match="more than one split"):
        fold_split([1], train_folds=(1,), val_folds=(1,), test_folds=())


def test_leakage_is_detected():
    with pytest.raises(AssertionError, match="p1"):
        assert_no_patient_leakage(["p0", "p1", "p1"], ["train", "train", "val"])
    table = pd.DataFrame({"patient_id": ["a", "a", "b"], "strat_fold": [1, 9, 9]})
    with pytest.raises(AssertionError):
        assign_splits(table, SplitConfig(method="folds"))


def test_ptbxl_fold_splits_have_no_patient_on_two_sides(ptbxl_dir):
    table = pd.read_csv(ptbxl_dir / "ptbxl_database.csv")
    standard = assign_splits(table, SplitConfig(method="folds"))
    counts = pd.Series(standard).value_counts()
    assert counts["train"] == 1309 + 1313 + 1278 + 1262 + 1294 + 1288 + 1301 + 2129
    assert counts["val"] == 2146 and "test" not in counts  # the shared copy has no fold 10
    shared_protocol = SplitConfig(method="folds", train_folds=tuple(range(1, 8)), val_folds=(8,), test_folds=(9,))
    counts = pd.Series(assign_splits(table, shared_protocol)).value_counts()
    assert (counts["val"], counts["test"]) == (2129, 2146)
