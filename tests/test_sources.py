"""The sources registry (ecgjax.data.sources): a corpus is one module with one `Source` class,
found by name; ingest knows nothing else about it."""
from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import pytest

from ecgjax.data import sources
from ecgjax.data.errors import ECGInputError
from ecgjax.data.ingest import ingest
from ecgjax.data.record import ECGRecord
from ecgjax.data.splits import SplitConfig
from ecgjax.data.store import ECGStore
from ecgjax.errors import UserError

FS = 200.0


@sources.register("test-npy")
class NpyFolder(sources.Source):
    """A source written here alone: a folder of PATIENT_RECORD.npy files, [time, 2] mV (leads I, II)."""

    layout = "a folder of PATIENT_RECORD.npy files"
    validated = False  # preprocess validates what `read` returns

    def items(self, input, *, sampling_rate):
        return [{"path": str(path)} for path in sorted(pathlib.Path(input).glob("*.npy"))]

    def read(self, item):
        path = pathlib.Path(item["path"])
        patient, _, record = path.stem.partition("_")
        return [ECGRecord(signal=np.load(path).astype(np.float32), fs=FS, lead_names=("I", "II"), record_id=path.stem,
                          patient_id=patient, source=self.name, metadata={"odd": int(record) % 2 == 1}, path=str(path))]

    def item_name(self, item):
        return pathlib.Path(item["path"]).stem, item["path"]

    def default_split(self):
        return SplitConfig(method="hash", val_fraction=0.25, test_fraction=0.25)


def test_a_source_registered_in_one_class_ingests(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(0)
    for patient in range(8):
        for record in range(2):
            np.save(corpus / f"p{patient}_{record}.npy", rng.normal(size=(400, 2)) * 0.3)
    np.save(corpus / "p9_0.npy", np.full((400, 2), np.nan))  # refused by preprocess, listed with its reason
    summary = ingest("test-npy", corpus, tmp_path / "store", workers=0, progress=False)
    store = ECGStore(tmp_path / "store")
    assert (summary["records"], summary["patients"], summary["rejected"]) == (16, 8, 1)
    assert store.fs == 250.0 and set(store.metadata["source"]) == {"test-npy"}
    assert store.config["split"]["test_fraction"] == 0.25  # the source's default split
    assert store.metadata.set_index("record_id")["odd"].to_dict()["p3_1"] == 1
    rejected = pd.read_csv(tmp_path / "store" / "rejected.csv")
    assert rejected.record.tolist() == ["p9_0"] and "NaN" in rejected.reason[0]
    with pytest.raises(ECGInputError, match="no test-npy records found; --input must be a folder of PATIENT_RECORD"):
        ingest("test-npy", tmp_path / "store" / "rejected.csv", tmp_path / "empty", workers=0, progress=False)


def test_each_corpus_is_a_registered_source_with_its_split():
    assert {"wfdb", "ptbxl", "code15", "cinc2017", "synthetic"} <= set(sources.names())
    assert sources.get("ptbxl").default_split().method == "folds" and sources.get("ptbxl").has_folds
    cinc = sources.get("cinc2017").default_split()
    assert (cinc.method, cinc.val_fraction, cinc.test_fraction) == ("hash", 0.05, 0.20)  # 001's 75/5/20 %
    for name in ("wfdb", "code15", "synthetic"):
        split = sources.get(name).default_split()
        assert (split.method, split.val_fraction, split.test_fraction) == ("hash", 0.1, 0.1)
        assert not sources.get(name).has_folds
    with pytest.raises(UserError, match=r"--source=nope: unknown source \(expected one of cinc2017, code15, "):
        sources.get("nope")
