"""A task's train / val / test records, resolved and checked before any training or embedding.

    splits = resolve_splits(store, task, {"train": "1-8", "val": "9", "test": "10"},
                            flag="--config.folds", standard=True)

Fold lists split a store whose records all have a PTB-XL strat_fold (`task_splits`); other
stores, or no fold lists, use the split assigned at ingest. A split the command needs that holds
no record with a valid label is a UserError naming the split, the folds (or split sizes) the store
holds and the exact flags to pass. A split whose folds are unset (None) takes the standard ones
(train 1-8 / val 9 / test 10); where those leave a needed split empty, as on the shared PTB-XL copy
without fold 10, only the unset splits fall back, with a warning: all unset, to the store's own
ingest split; some set, to the folds ingest's rule gives (`suggest_folds`) beside the set ones.
Folds the user set are used as given or refused, never replaced.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from ecgjax.data.splits import SPLITS, SplitConfig, fold_split, folds_from_present, format_folds, parse_folds
from ecgjax.data.store import ECGStore
from ecgjax.errors import UserError
from ecgjax.eval.tasks import Task

logger = logging.getLogger("ecgjax")

# The standard PTB-XL protocol of a complete copy (configs/probe.py defaults).
STANDARD_FOLDS = {"train": "1-8", "val": "9", "test": "10"}


def has_folds(store: ECGStore) -> bool:
    """Whether every record has a PTB-XL strat_fold, so fold lists can split the store."""
    metadata = store.metadata
    return "strat_fold" in metadata and bool(metadata["strat_fold"].notna().all())


def task_splits(store: ECGStore, folds: dict | None = None) -> dict[str, np.ndarray]:
    """{'train', 'val', 'test'} -> store record indices, unchecked (see `resolve_splits`).

    folds: {'train': '1-8', 'val': '9', 'test': '10'} applied to metadata strat_fold when the store
    has that column (PTB-XL); otherwise (or with folds None) the store's own split column.
    """
    metadata = store.metadata
    if folds and has_folds(store):
        names = fold_split(metadata["strat_fold"].to_numpy(), train_folds=parse_folds(folds["train"]),
                           val_folds=parse_folds(folds["val"]), test_folds=parse_folds(folds["test"]))
    else:
        names = metadata["split"].to_numpy()
    return {split: np.flatnonzero(names == split) for split in SPLITS}


def suggest_folds(present: Sequence[int]) -> dict | None:
    """Folds by ingest's rule for a copy lacking the standard ones (splits.folds_from_present): the
    last fold tests, the one before validates, the rest train (1-9 -> 1-7 / 8 / 9). None with fewer
    than three folds."""
    try:
        picked = folds_from_present(SplitConfig(method="folds"), present)
    except ValueError:
        return None
    return {"train": format_folds(picked.train_folds), "val": format_folds(picked.val_folds),
            "test": format_folds(picked.test_folds)}


def fold_flags(flag: str, folds: dict) -> str:
    """`folds` spelled for the command line: '--config.folds.train=1-7 ...' or '--folds=1-7,8,9'."""
    if flag.startswith("--config."):
        return " ".join(f"{flag}.{split}={folds[split]}" for split in SPLITS)
    return f"{flag}=" + ",".join(str(folds[split]) for split in SPLITS)


def unset_splits(folds: dict | None) -> set[str]:
    """The splits `folds` leaves unset (None, '' or absent): they take STANDARD_FOLDS."""
    return set(SPLITS) if folds is None else {split for split in SPLITS if not folds.get(split)}


def is_standard(folds: dict | None) -> bool:
    """Whether `folds` sets no split at all, so the standard protocol applies with its fallback to
    the store's ingest split (configs/probe.py's default: every split None)."""
    return folds is not None and unset_splits(folds) == set(SPLITS)


def _with_standard(folds: dict) -> dict:
    """`folds` with STANDARD_FOLDS in its unset splits."""
    return {split: folds.get(split) or STANDARD_FOLDS[split] for split in SPLITS}


def _parsed(folds: dict, flag: str) -> dict[str, tuple[int, ...]]:
    """Fold numbers per split; a UserError naming the flag for bad text or a fold used twice."""
    parsed = {}
    for split in SPLITS:
        try:
            parsed[split] = parse_folds(folds[split])
        except UserError as error:
            raise UserError(f"{fold_flags(flag, folds)}: {error}") from None
    taken = [f for split in SPLITS for f in parsed[split]]
    if len(taken) != len(set(taken)):
        twice = sorted({f for f in taken if taken.count(f) > 1})
        raise UserError(f"{fold_flags(flag, folds)}: fold(s) {format_folds(twice)} in more than one split; "
                        f"each fold may train, validate or test, not two of them")
    return parsed


def _empty(store: ECGStore, task: Task, splits: dict, needed) -> dict[str, int]:
    """{split: records in it} for the needed splits without one record that has a valid label."""
    empty = {}
    for split in needed:
        records = splits[split]
        _, valid = task.targets(store.metadata.iloc[records].reset_index(drop=True))
        if not valid.any():
            empty[split] = len(records)
    return empty


def _folds(store: ECGStore, task: Task | None = None) -> list[int]:
    """The strat_fold values of the store ([] without the column), or of its records with a valid
    `task` label."""
    if not has_folds(store):
        return []
    folds = store.metadata["strat_fold"].to_numpy()
    if task is not None:
        folds = folds[task.targets(store.metadata)[1]]
    return sorted(int(f) for f in np.unique(folds))


def _ingest_split(store: ECGStore) -> str:
    """How ingest split the store, e.g. 'train folds 1-7, val 8, test 9' or 'a hashed patient split'."""
    config = store.config.get("split") or {}
    if config.get("method") == "folds":
        return (f"train folds {format_folds(config['train_folds'])}, val {format_folds(config['val_folds'])}, "
                f"test {format_folds(config['test_folds'])}")
    return "a hashed patient split" if config.get("method") == "hash" else "its split column"


def _problem(task: Task, empty: dict[str, int]) -> str:
    """'the test split is empty (...)' for the empty splits {split: records in it}."""
    names = " and ".join(f"the {split} split" for split in empty)
    with_records = [f"{split} has {count} records but none with a valid {task.name} label"
                    for split, count in empty.items() if count]
    return f"{names} {'is' if len(empty) == 1 else 'are'} empty" + (f" ({'; '.join(with_records)})"
                                                                    if with_records else "")


def _fallback(store: ECGStore, task: Task, folds: dict, unset: set[str], needed):
    """(splits, (what, which)) standing in for standard folds that leave a needed split empty, or None.

    Every split unset: the store's own ingest split. Some set: the unset splits take the folds
    ingest's rule picks from the labelled folds (all of them, else those the set splits leave),
    where they are disjoint from the set ones and fill every needed split."""
    if unset == set(SPLITS):
        own = task_splits(store, None)
        return None if _empty(store, task, own, needed) else (own, ("the store's own split from ingest is used",
                                                                    _ingest_split(store)))
    labelled = _folds(store, task)
    taken = {f for split in set(SPLITS) - unset for f in parse_folds(folds[split])}
    for present in (labelled, [f for f in labelled if f not in taken]):
        suggestion = suggest_folds(present)
        if suggestion is None or any(set(parse_folds(suggestion[s])) & taken for s in unset):
            continue
        picked = {split: suggestion[split] if split in unset else folds[split] for split in SPLITS}
        splits = task_splits(store, picked)
        if not _empty(store, task, splits, needed):
            return splits, ("the unset folds follow ingest's rule", ", ".join(
                f"{split} {picked[split]}" for split in SPLITS if split in unset))
    return None


def resolve_splits(store: ECGStore, task: Task, folds: dict | None, *, needed: Sequence[str] = SPLITS,
                   flag: str = "--config.folds", standard: bool = False) -> dict[str, np.ndarray]:
    """{'train', 'val', 'test'} -> store record indices (`task_splits`), checked up front.

    folds: fold lists per split ('1-8', '9', ...; None or absent: unset, the standard folds), or
      None for the store's ingest split.
    needed: the splits the command uses; one without a validly labelled record is a UserError
      naming `flag`, the folds the store holds and the flags that would work.
    standard: treat every split as unset (the caller's folds are untouched defaults).
    Where the standard folds of the unset splits leave a needed split empty, those splits fall back
    (logged as a warning; see the module docstring); set ones never do.
    """
    unset = set(SPLITS) if standard else unset_splits(folds)
    folds = _with_standard(folds) if folds is not None else None
    uses_folds = bool(folds) and has_folds(store)
    parsed = _parsed(folds, flag) if uses_folds else None
    splits = task_splits(store, folds)
    empty = _empty(store, task, splits, needed)
    if not empty:
        return splits
    fallback = _fallback(store, task, folds, unset, needed) if uses_folds and unset else None
    if fallback is not None:
        instead, how = fallback
        logger.warning("%s holds folds %s: with %s %s, so %s instead: %s (records: %s). "
                       "Pass %s.* to choose other folds.", store.path, format_folds(_folds(store)),
                       fold_flags(flag, folds), _problem(task, empty), how[0], how[1],
                       ", ".join(f"{s} {len(instead[s])}" for s in SPLITS), flag)
        return instead
    sizes = ", ".join(f"{split} {len(splits[split])}" for split in SPLITS)
    present, labelled = _folds(store), _folds(store, task)
    suggestion = suggest_folds(labelled)
    if suggestion and parsed and all(parse_folds(suggestion[s]) == parsed[s] for s in SPLITS):
        suggestion = None  # the folds given are already the best guess
    if suggestion:
        fix = f"pass {fold_flags(flag, suggestion)}"
    elif len(present) >= 3:
        fix = f"choose folds that hold {task.name} labels, or another task or store"
    else:
        fix = ("ingest again with more patients, or larger --val_fraction / --test_fraction for a "
               "hashed split")
    holds = ""
    if present:
        holds = f"holds folds {format_folds(present)}" + (
            f", {task.name} labels only in folds {format_folds(labelled) or 'none'}" if labelled != present else "")
    if uses_folds:
        raise UserError(f"{fold_flags(flag, folds)}: {_problem(task, empty)} in {store.path}, which "
                        f"{holds} (records per split: {sizes}); {fix}")
    where = f"{store.path} (split at ingest: {_ingest_split(store)}; records per split: {sizes}" + (
        f"; it {holds}" if present else "") + ")"
    raise UserError(f"{_problem(task, empty)} in {where}; {fix}")
