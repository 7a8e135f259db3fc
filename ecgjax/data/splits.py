"""Patient-level train / validation / test splits: no patient is ever on two sides.

Two ways to split, both deterministic:
  - by PTB-XL `strat_fold` (folds are patient-stratified by the PTB-XL authors); default is the
    standard protocol for a complete copy: train 1-8, val 9, test 10;
  - by a hash of (seed, patient_id), for corpora without folds; stable under adding records.
Records whose fold is in no list get split 'unused'. A copy lacking some of those folds (the
shared PTB-XL holds folds 1-9) leaves a split empty: `resolve_folds` then picks folds from what is
there (last fold test, the one before validation, the rest training) and says so, or, where the
folds were asked for, refuses with the folds to pass.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging

import numpy as np
import pandas as pd

from ecgjax.errors import UserError

log = logging.getLogger(__name__)

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
    """Split name per record from its patient id alone, so all records of a patient agree; where
    that would leave train empty (a corpus of a patient or two) one patient is put in train.

    Args:
      patient_ids: [num_records] patient ids (any str-able values).
    Returns:
      [num_records] object array of 'train' / 'val' / 'test'.
    """
    ids = pd.Series(patient_ids).astype(str)
    unique = ids.unique()
    u = np.array([_unit_interval_hash(p, seed) for p in unique])
    names = np.where(u < test_fraction, "test", np.where(u < test_fraction + val_fraction, "val", "train"))
    if unique.size and val_fraction + test_fraction < 1 and not (names == "train").any():
        # Too few patients to fill every split (one record): training data comes first, so the
        # patient hashed closest to train's share goes there. Larger corpora are never touched.
        names[np.argmax(u)] = "train"
    by_patient = dict(zip(unique, names))
    return ids.map(by_patient).to_numpy(object)


def fold_split(folds, *, train_folds, val_folds, test_folds) -> np.ndarray:
    """Split name per record from its fold number ('unused' for folds in no list)."""
    folds = np.asarray(folds).astype(int)
    groups = {"train": train_folds, "val": val_folds, "test": test_folds}
    taken = [f for fs in groups.values() for f in fs]
    if len(taken) != len(set(taken)):
        raise UserError(f"a fold is in more than one split: {groups}; give each fold to one split")
    out = np.full(folds.shape, UNUSED, dtype=object)
    for name, fs in groups.items():
        out[np.isin(folds, list(fs))] = name
    return out


def parse_folds(values) -> tuple[int, ...]:
    """'1-7' / '1,3-4' / ['1', '2-3'] / (1, 2) -> fold numbers; UserError on anything else."""
    if isinstance(values, str):
        values = values.split(",")
    folds = []
    for part in values:
        if isinstance(part, (int, np.integer)):
            folds.append(int(part))
            continue
        part = str(part).replace(" ", "")
        if not part:
            continue
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise UserError(f"folds {part!r}: expected fold numbers and ranges such as '1-7', '8' or '1,3-4'")
        folds += list(range(int(low), int(high or low) + 1))
    return tuple(folds)


def format_folds(folds) -> str:
    """(1, 2, 3, 5) -> '1-3,5'."""
    runs: list[list[int]] = []
    for fold in sorted(set(int(f) for f in folds)):
        if runs and fold == runs[-1][1] + 1:
            runs[-1][1] = fold
        else:
            runs.append([fold, fold])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def empty_fold_splits(config: SplitConfig, present) -> list[str]:
    """The splits of a 'folds' config that get none of the `present` folds."""
    present = {int(f) for f in present}
    groups = {"train": config.train_folds, "val": config.val_folds, "test": config.test_folds}
    return [name for name, folds in groups.items() if not present & set(folds)]


def folds_from_present(config: SplitConfig, present) -> SplitConfig:
    """`config` with the last present fold as test, the one before as validation and the rest as
    training (for a copy lacking the standard folds); ValueError with fewer than three folds."""
    present = sorted({int(f) for f in present})
    if len(present) < 3:
        raise ValueError(f"only folds {format_folds(present) or 'none'} present: three are needed "
                         f"(train, validation, test)")
    return dataclasses.replace(config, train_folds=tuple(present[:-2]), val_folds=(present[-2],),
                               test_folds=(present[-1],))


def resolve_folds(split: SplitConfig, folds, *, auto: bool, where) -> tuple[SplitConfig, str]:
    """(split, note) for the records' `folds` [num_records]: `split` itself when every split gets a
    fold that is present; with `auto`, folds picked from those present and a note saying which
    and why; otherwise a UserError naming the empty split, the folds present and the flags to pass."""
    folds = pd.to_numeric(pd.Series(list(folds), dtype=object), errors="coerce").dropna()
    present = sorted(set(folds.astype(int)))
    groups = {"train": split.train_folds, "val": split.val_folds, "test": split.test_folds}
    shared = sorted(set(split.train_folds) & set(split.val_folds) | set(split.train_folds) & set(split.test_folds)
                    | set(split.val_folds) & set(split.test_folds))
    if shared:
        raise UserError(f"fold(s) {format_folds(shared)} given to more than one split "
                        f"({', '.join(f'{k} {format_folds(v)}' for k, v in groups.items())}): "
                        f"pass disjoint --train_folds, --val_folds and --test_folds")
    empty = empty_fold_splits(split, present)
    if not empty:
        return split, ""
    missing = "; ".join(f"{name} fold{'s' if len(groups[name]) > 1 else ''} {format_folds(groups[name])}"
                        for name in empty)
    try:
        picked = folds_from_present(split, present)
    except ValueError as error:
        raise UserError(f"{where}: no records in {missing}, and {error}: use --split_method=hash") from None
    flags_fix = (f"--train_folds={format_folds(picked.train_folds)} --val_folds={format_folds(picked.val_folds)} "
                 f"--test_folds={format_folds(picked.test_folds)}")
    if not auto:
        raise UserError(f"{where}: the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} would be "
                        f"empty: no records in {missing} (folds present: {format_folds(present)}); "
                        f"pass folds that exist, e.g. {flags_fix}")
    note = (f"picked from the folds present ({format_folds(present)}) since {missing} "
            f"{'is' if len(empty) == 1 else 'are'} missing; pass {flags_fix} (or others) to choose")
    log.warning("folds: train %s, val %s, test %s (%s)", format_folds(picked.train_folds),
                format_folds(picked.val_folds), format_folds(picked.test_folds), note)
    return picked, note


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
