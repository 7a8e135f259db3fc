"""Up-front split checks of probe and diagnose (ecgjax.eval.folds): an empty split is one clear
error naming the folds the store holds and the flags to pass; the standard folds fall back to the
store's own ingest split where that is complete."""
from __future__ import annotations

import logging

import pytest

from ecgjax.data.splits import SplitConfig
from ecgjax.errors import UserError
from ecgjax.eval import folds, tasks
from fixtures import write_fold_store

MI = tasks.get_task("MI")
SHARED_COPY_FLAGS = "--config.folds.train=1-7 --config.folds.val=8 --config.folds.test=9"
FOLDS_1_9 = SplitConfig(method="folds", train_folds=tuple(range(1, 8)), val_folds=(8,), test_folds=(9,))


@pytest.fixture(scope="module")
def no_test_split(tmp_path_factory):
    """Folds 1-9 (no fold 10), split at ingest by patient hash with no test share."""
    return write_fold_store(tmp_path_factory.mktemp("folds") / "store", SplitConfig(method="hash", test_fraction=0.0))


@pytest.fixture(scope="module")
def split_by_folds_1_9(tmp_path_factory):
    """Folds 1-9, split at ingest into train 1-7 / val 8 / test 9."""
    return write_fold_store(tmp_path_factory.mktemp("folds") / "store", FOLDS_1_9)


def test_suggestion_and_standard_folds():
    assert folds.suggest_folds(range(1, 10)) == {"train": "1-7", "val": "8", "test": "9"}
    assert folds.suggest_folds(range(1, 11)) == {"train": "1-8", "val": "9", "test": "10"}
    assert folds.suggest_folds([4, 5]) is None
    # Standard means no split set (configs/probe.py's None), not folds that equal the standard ones.
    assert folds.is_standard({"train": None, "val": None, "test": None})
    assert not folds.is_standard({"train": None, "val": None, "test": "10"}) and not folds.is_standard(None)
    assert not folds.is_standard({"train": "1-8", "val": "9", "test": "10"})


def test_standard_folds_without_fold_10_name_the_flags(no_test_split):
    with pytest.raises(UserError) as error:
        folds.resolve_splits(no_test_split, MI, folds.STANDARD_FOLDS, standard=True)
    message = str(error.value)
    assert "test split is empty" in message and "holds folds 1-9" in message
    assert message.endswith(f"pass {SHARED_COPY_FLAGS}")


def test_store_split_without_test_names_the_folds_flag(no_test_split):
    with pytest.raises(UserError, match=r"test split is empty .*hashed patient split.*pass --folds=1-7,8,9$"):
        folds.resolve_splits(no_test_split, MI, None, flag="--folds")
    # The plot of diagnose needs only the validation split.
    assert len(folds.resolve_splits(no_test_split, MI, None, needed=("val",), flag="--folds")["val"]) > 0


def test_standard_folds_fall_back_to_the_ingest_split(split_by_folds_1_9, caplog):
    with caplog.at_level(logging.WARNING, logger="ecgjax"):
        splits = folds.resolve_splits(split_by_folds_1_9, MI, folds.STANDARD_FOLDS, standard=True)
    fold = split_by_folds_1_9.metadata["strat_fold"].to_numpy()
    assert [sorted(set(fold[splits[s]])) for s in ("train", "val", "test")] == [list(range(1, 8)), [8], [9]]
    assert "train folds 1-7, val 8, test 9" in caplog.text and "test split is empty" in caplog.text
    # Folds the user chose are never replaced.
    with pytest.raises(UserError, match="test split is empty"):
        folds.resolve_splits(split_by_folds_1_9, MI, folds.STANDARD_FOLDS, standard=False)


def test_a_fold_set_is_refused_where_unset_ones_fall_back(split_by_folds_1_9, caplog):
    """--config.folds.test=10 on a store without fold 10 is refused, though the standard test fold is
    10 too; with only train set, the unset val and test follow ingest's rule (8, 9) beside it."""
    unset = {"train": None, "val": None}
    with pytest.raises(UserError, match=r"--config.folds.test=10: the test split is empty .*holds folds 1-9"):
        folds.resolve_splits(split_by_folds_1_9, MI, {**unset, "test": "10"})
    with caplog.at_level(logging.WARNING, logger="ecgjax"):
        splits = folds.resolve_splits(split_by_folds_1_9, MI, {"train": "1-6", "val": None, "test": None})
    fold = split_by_folds_1_9.metadata["strat_fold"].to_numpy()
    assert [sorted(set(fold[splits[s]])) for s in ("train", "val", "test")] == [list(range(1, 7)), [8], [9]]
    assert "the unset folds follow ingest's rule instead: val 8, test 9" in caplog.text
    # An unset split whose rule-picked folds the set ones took is not replaced either.
    with pytest.raises(UserError, match="test split is empty"):
        folds.resolve_splits(split_by_folds_1_9, MI, {"train": "1-7", "val": "8,9", "test": None})


def test_split_without_labels_and_bad_fold_flags(tmp_path):
    store = write_fold_store(tmp_path / "store", FOLDS_1_9, unlabelled_folds=(8,))
    with pytest.raises(UserError) as error:
        folds.resolve_splits(store, MI, {"train": "1-7", "val": "8", "test": "9"})
    message = str(error.value)
    assert "val has 3 records but none with a valid MI label" in message
    assert "MI labels only in folds 1-7,9" in message and message.endswith(
        "pass --config.folds.train=1-6 --config.folds.val=7 --config.folds.test=9")
    with pytest.raises(UserError, match=r"--config.folds.val=x .*folds 'x': expected fold numbers"):
        folds.resolve_splits(store, MI, {"train": "1-7", "val": "x", "test": "9"})
    with pytest.raises(UserError, match=r"fold\(s\) 7 in more than one split"):
        folds.resolve_splits(store, MI, {"train": "1-7", "val": "7", "test": "9"})


def test_shared_ptbxl_copy_without_fold_10(ptbxl_dir, tmp_path):
    """The real copy holds folds 1-9: the standard folds leave test empty, 1-7 / 8 / 9 work."""
    from ecgjax.data.ingest import ingest_records
    from ecgjax.data.sources.ptbxl import load_ptbxl_table, read_ptbxl
    from ecgjax.data.store import ECGStore

    table = load_ptbxl_table(ptbxl_dir)
    ids = table.groupby("strat_fold").head(2)["ecg_id"].tolist()
    ingest_records(read_ptbxl(ptbxl_dir, ecg_ids=ids, table=table), tmp_path / "store", target_fs=100.0,
                   split=FOLDS_1_9)
    store = ECGStore(tmp_path / "store")
    norm = tasks.get_task("NORM")
    with pytest.raises(UserError, match=f"test split is empty .*holds folds 1-9.*pass {SHARED_COPY_FLAGS}$"):
        folds.resolve_splits(store, norm, folds.STANDARD_FOLDS)
    chosen = folds.resolve_splits(store, norm, {"train": "1-7", "val": "8", "test": "9"})
    assert [len(chosen[s]) for s in ("train", "val", "test")] == [14, 2, 2]
    fallback = folds.resolve_splits(store, norm, folds.STANDARD_FOLDS, standard=True)
    assert all((fallback[s] == chosen[s]).all() for s in chosen)
