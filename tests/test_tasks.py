"""Task definitions, targets, splits, the CinC 2017 layout and label CSV tasks."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecgjax.data.errors import ECGInputError
from ecgjax.data.ingest import build_store, build_synthetic_store, ingest_records
from ecgjax.data.sources import cinc2017
from ecgjax.data.sources.ptbxl import PTBXL_SUPERCLASSES
from ecgjax.data.splits import SplitConfig, parse_folds
from ecgjax.eval import tasks
from ecgjax.eval.folds import task_splits
from ecgjax.eval.task_data import load_task_data
from fixtures import write_cinc2017_fixture


@pytest.fixture(scope="module")
def syn_store(tmp_path_factory):
    return build_synthetic_store(tmp_path_factory.mktemp("syn") / "store", 12, 2, seed=1)


def test_targets_by_type():
    meta = pd.DataFrame({"sex": [0, 1, "F", "M", None], "age": [40, 300, 89, np.nan, 95],
                         "label": ["N", "A", "x", "~", "O"], "MI": [1, 0, 1, 0, 1], "STTC": [0, 0, 1, 1, 0]})
    y, valid = tasks.get_task("sex").targets(meta)
    assert valid.tolist() == [True, True, True, True, False] and y[:4].tolist() == [0, 1, 1, 0]
    y, valid = tasks.get_task("age").targets(meta)
    assert valid.tolist() == [True, True, True, False, True]
    assert y[valid].tolist() == [40, 90, 89, 90]  # 300 codes "> 89": capped at 90
    y, valid = tasks.get_task("cinc2017").targets(meta)
    assert valid.tolist() == [True, True, False, True, True] and y[valid].tolist() == [0, 1, 3, 2]
    multi = tasks.Task("two", "multilabel", ("MI", "STTC"))
    y, valid = multi.targets(meta)
    assert y.shape == (5, 2) and valid.all() and multi.output_names == ("MI", "STTC")


def test_get_task_resolves_columns():
    assert tasks.get_task("afib", ["AFIB", "MI"]).columns == ("AFIB",)
    assert tasks.get_task("afib", ["afib", "wide_qrs"]).columns == ("afib",)
    assert tasks.get_task("wide_qrs", ["wide_qrs"]).type == "binary"
    assert tasks.get_task("superclass").output_names == PTBXL_SUPERCLASSES
    lead_ii = tasks.get_task("MI", leads=["II"])
    assert lead_ii.leads == ("II",) and lead_ii.lead_columns == [1]
    with pytest.raises(ValueError, match="unknown task"):
        tasks.get_task("nonsense", ["MI"])
    with pytest.raises(ValueError, match="unknown leads"):
        tasks.get_task("MI", leads=["X7"])


def test_parse_folds():
    assert parse_folds("1-7") == (1, 2, 3, 4, 5, 6, 7)
    assert parse_folds("8") == (8,) and parse_folds("1,3-4") == (1, 3, 4)


def test_synthetic_task_arrays(syn_store):
    task = tasks.get_task("conditions", leads=["I", "II"])
    data = load_task_data(syn_store, task)
    total = sum(len(a) for a in data.values())
    assert total == len(syn_store)
    train = data["train"]
    assert train.x.shape[1:] == (2500, 2) and train.y.shape == (len(train), 5)
    first = int(train.record_index[0])
    np.testing.assert_allclose(train.x[0], syn_store.read(first, 0, 2500)[:, :2])
    assert set(train.patient) & set(data["test"].patient) == set()


def test_csv_task_joins_on_record_id(syn_store, tmp_path):
    ids = syn_store.metadata["record_id"].tolist()
    path = tmp_path / "labels.csv"
    pd.DataFrame({"record_id": ids[:-2], "score": np.arange(len(ids) - 2) * 1.5}).to_csv(path, index=False)
    task = tasks.get_task(f"csv:{path}:score")
    assert task.type == "regression"
    y, valid = task.targets(syn_store.metadata)
    assert valid.sum() == len(ids) - 2 and y[1] == 1.5
    pd.DataFrame({"record_id": ids, "grade": ["lo", "hi"] * (len(ids) // 2)}).to_csv(path, index=False)
    assert tasks.get_task(f"csv:{path}:grade").classes == ("hi", "lo")
    with pytest.raises(ECGInputError, match="no column"):
        tasks.get_task(f"csv:{path}:missing")


def test_ptbxl_fold_splits(ptbxl_dir, tmp_path):
    from ecgjax.data.sources.ptbxl import load_ptbxl_table, read_ptbxl

    table = load_ptbxl_table(ptbxl_dir)
    ids = table.groupby("strat_fold").head(2)["ecg_id"].tolist()  # two records of every fold
    ingest_records(read_ptbxl(ptbxl_dir, ecg_ids=ids, table=table), tmp_path / "store",
                   split=SplitConfig(method="folds"))
    from ecgjax.data.store import ECGStore

    store = ECGStore(tmp_path / "store")
    splits = task_splits(store, {"train": "1-7", "val": "8", "test": "9"})
    folds = store.metadata["strat_fold"].to_numpy()
    assert set(folds[splits["train"]]) <= set(range(1, 8))
    assert set(folds[splits["val"]]) == {8} and set(folds[splits["test"]]) == {9}
    data = load_task_data(store, tasks.get_task("superclass"), {"train": "1-7", "val": "8", "test": "9"})
    assert data["test"].y.shape[1] == 5
    age = load_task_data(store, tasks.get_task("age"), {"train": "1-7", "val": "8", "test": "9"})
    assert all((a.y <= 90).all() for a in age.values())


def test_cinc2017_reader_and_store(tmp_path):
    labels = write_cinc2017_fixture(tmp_path / "cinc", n_records=8, seed=0)
    records = list(cinc2017.read_cinc2017(tmp_path / "cinc"))
    assert [r.metadata["label"] for r in records] == list(labels.values())
    assert records[0].fs == 300 and records[0].lead_names == ("I",)
    assert len({r.num_samples for r in records}) > 1  # variable length
    store = build_store("cinc2017", tmp_path / "cinc", tmp_path / "store")
    assert store.fs == 250 and store.lead_mask(0).tolist() == [True] + [False] * 11
    data = load_task_data(store, tasks.get_task("cinc2017"))
    assert sum(len(a) for a in data.values()) == 8 and data["train"].x.shape[2] == 1


def test_cinc2017_bad_reference(tmp_path):
    write_cinc2017_fixture(tmp_path, n_records=4)
    (tmp_path / "REFERENCE.csv").write_text("A00001,N\nA00002,Q\n")
    with pytest.raises(ECGInputError, match="REFERENCE.csv: line 2"):
        list(cinc2017.read_cinc2017(tmp_path))


def test_cinc2017_reference_header_crlf_and_bom(tmp_path):
    labels = write_cinc2017_fixture(tmp_path, n_records=4)
    body = "".join(f"{name},{label}\r\n" for name, label in labels.items())
    for header in ("data_source,class\r\n", "Record,Label\r\n", "\ufeffrecord,rhythm\r\n", "\ufeff"):
        (tmp_path / "REFERENCE.csv").write_text(header + body, encoding="utf-8", newline="")
        assert cinc2017.read_cinc2017_reference(tmp_path) == labels
    # A first line naming a record with a bad label is that record's error, not a header.
    (tmp_path / "REFERENCE.csv").write_text("A00001,Q\n" + body)
    with pytest.raises(ECGInputError, match="REFERENCE.csv: line 1"):
        cinc2017.read_cinc2017_reference(tmp_path)
    (tmp_path / "REFERENCE.csv").write_text("data_source,class\n")
    with pytest.raises(ECGInputError, match="no labelled records"):
        cinc2017.read_cinc2017_reference(tmp_path)


def test_cinc2017_unlabelled_record_is_rejected_at_ingest(tmp_path):
    labels = write_cinc2017_fixture(tmp_path / "cinc", n_records=4)
    (tmp_path / "cinc" / "REFERENCE.csv").write_text("".join(f"{n},{c}\n" for n, c in list(labels.items())[1:]))
    with pytest.raises(ECGInputError, match="no label for record 'A00001'"):
        list(cinc2017.read_cinc2017(tmp_path / "cinc"))
    store = build_store("cinc2017", tmp_path / "cinc", tmp_path / "store")
    assert len(store) == 3
    rejected = pd.read_csv(tmp_path / "store" / "rejected.csv")
    assert rejected.record.tolist() == ["A00001"] and "no label" in rejected.reason[0]
