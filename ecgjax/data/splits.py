"""Patient-level train / validation / test splits: no patient is ever on two sides.

Two ways to split, both deterministic:
  - by PTB-XL `strat_fold` (folds are patient-stratified by the PTB-XL authors); default is the
    standard protocol for a complete copy: train 1-8, val 9, test 10;
  - by a hash of (seed, patient_id), for corpora without folds; stable under adding records.
Records whose fold is in no list get split 'unused'.
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
UNUSED = "unused"


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """How to split. method: 'folds' (needs a strat_fold column) or 'hash'."""

    method: str = "hash"
    train_folds: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    val_folds: tuple[int, ...] = (9,)
    test_folds: tuple[int, ...] = (10,)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SplitConfig":
        d = dict(d)
        for key in ("train_folds", "val_folds", "test_folds"):
            if key in d:
                d[key] = tuple(int(v) for v in d[key])
        return cls(**d)


def _unit_interval_hash(patient_id: str, seed: int) -> float:
    """Uniform in [0, 1) from (seed, patient_id); independent of Python's hash randomisation."""
    digest = hashlib.sha256(f"{seed}:{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def hashed_patient_split(patient_ids, *, val_fraction=0.1, test_fraction=0.1, seed=0) -> np.ndarray:
    """Split name per record from its patient id alone, so all records of a patient agree.

    Args:
      patient_ids: [num_records] patient ids (any str-able values).
    Returns:
      [num_records] object array of 'train' / 'val' / 'test'.
    """
    ids = pd.Series(patient_ids).astype(str)
    unique = ids.unique()
    u = np.array([_unit_interval_hash(p, seed) for p in unique])
    names = np.where(u < test_fraction, "test", np.where(u < test_fraction + val_fraction, "val", "train"))
    by_patient = dict(zip(unique, names))
    return ids.map(by_patient).to_numpy(object)


def fold_split(folds, *, train_folds, val_folds, test_folds) -> np.ndarray:
    """Split name per record from its fold number ('unused' for folds in no list)."""
    folds = np.asarray(folds).astype(int)
    groups = {"train": train_folds, "val": val_folds, "test": test_folds}
    taken = [f for fs in groups.values() for f in fs]
    if len(taken) != len(set(taken)):
        raise ValueError(f"a fold is in more than one split: {groups}")
    out = np.full(folds.shape, UNUSED, dtype=object)
    for name, fs in groups.items():
        out[np.isin(folds, list(fs))] = name
    return out


def assign_splits(metadata: pd.DataFrame, config: SplitConfig) -> np.ndarray:
    """[num_records] split names for `metadata` (needs patient_id; 'folds' needs strat_fold).

    Asserts that no patient is on two sides.
    """
    if config.method == "folds":
        if "strat_fold" not in metadata:
            raise ValueError("split method 'folds' needs a strat_fold column")
        splits = fold_split(metadata["strat_fold"], train_folds=config.train_folds,
                            val_folds=config.val_folds, test_folds=config.test_folds)
    elif config.method == "hash":
        splits = hashed_patient_split(metadata["patient_id"], val_fraction=config.val_fraction,
                                      test_fraction=config.test_fraction, seed=config.seed)
    else:
        raise ValueError(f"unknown split method {config.method!r} (expected 'folds' or 'hash')")
    assert_no_patient_leakage(metadata["patient_id"], splits)
    return splits


def assert_no_patient_leakage(patient_ids, splits) -> None:
    """Raises AssertionError naming a patient whose records fall in more than one split."""
    frame = pd.DataFrame({"patient": pd.Series(patient_ids).astype(str).to_numpy(),
                          "split": np.asarray(splits)})
    per_patient = frame.groupby("patient")["split"].nunique()
    leaked = per_patient[per_patient > 1]
    if len(leaked):
        example = leaked.index[0]
        sides = sorted(frame.loc[frame.patient == example, "split"].unique())
        raise AssertionError(f"{len(leaked)} patients in more than one split, e.g. {example!r} in {sides}")
