"""The one loader (run / exported encoder / saved model / zoo:NAME), the Python API on arrays and
experiments/predict.py, on a tiny random network (no training: what is tested is loading and the
preparation of arrays, which must match what ingest, embed.py and the probe do)."""
from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pandas as pd
import pytest
import wfdb

import ecgjax
from ecgjax import api, loader, zoo
from ecgjax.data import ingest
from ecgjax.data.store import ECGStore
from ecgjax.downstream.heads import Head
from ecgjax.downstream.model import new_model
from ecgjax.errors import UserError
from ecgjax.eval import embed as embed_lib
from ecgjax.train import state as state_lib
from tests import entry_points
from tests.fixtures import ecg_like, write_wfdb_fixture

CLASSES = ("NORM", "MI", "STTC", "CD", "HYP")


@pytest.fixture(scope="module")
def network() -> loader.PretrainedNetwork:
    """A CL ResNet (runlocal size, 4 s windows at 100 Hz) with random weights."""
    from configs import cl_resnet

    config = cl_resnet.get_config("runlocal")
    config.data.fs, config.data.segment_s = 100.0, 4.0
    model = state_lib.build_model(config)
    batch = state_lib.example_batch(config)
    variables = jax.device_get(jax.jit(lambda k: model.init({"params": k, "dropout": k}, batch, train=False))(
        jax.random.PRNGKey(0)))
    return loader.PretrainedNetwork(config, dict(variables), "test")


@pytest.fixture(scope="module")
def exported(network, tmp_path_factory) -> pathlib.Path:
    return loader.export_pretrained(network, tmp_path_factory.mktemp("exported") / "cl")


@pytest.fixture(scope="module")
def classifier_dir(network, tmp_path_factory) -> pathlib.Path:
    """A 5-superclass model on leads I, II, V1 of the network's encoder, thresholds recorded."""
    cut = dict(network.encoder_config, in_leads=3)
    model = new_model(cut, [Head("superclass", "multilabel", CLASSES)], fs=100.0, leads=("I", "II", "V1"),
                      window_s=4.0, seed=1)
    model.thresholds = {"superclass": [0.5, 0.4, 0.45, 0.5, 0.55]}
    return model.save(tmp_path_factory.mktemp("models") / "superclass")


def test_export_round_trip_and_kinds(network, exported, classifier_dir):
    loaded = loader.load_pretrained(str(exported))
    assert loader.kind_of(exported) == "pretrained" and loader.kind_of(classifier_dir) == "model"
    assert loaded.config.model.to_dict() == network.config.model.to_dict()
    for a, b in zip(jax.tree.leaves(loaded.variables), jax.tree.leaves(network.variables)):
        np.testing.assert_array_equal(a, b)
    assert isinstance(loader.load(str(classifier_dir)), type(loader.load_trained(str(classifier_dir))))
    with pytest.raises(UserError, match="a model with trained heads"):
        loader.load_pretrained(str(classifier_dir), "--config.checkpoint")
    with pytest.raises(UserError, match="without trained heads"):
        loader.load_trained(str(exported), "--model")
    with pytest.raises(UserError, match="--model=.*no such directory"):
        loader.load_trained(str(exported / "nope"), "--model")


@pytest.fixture()
def tmp_zoo(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "ROOT", tmp_path / "zoo")
    monkeypatch.setattr(zoo, "REGISTRY", tmp_path / "zoo" / "registry.json")
    (tmp_path / "zoo").mkdir()
    return tmp_path / "zoo"


def test_zoo_verifies_every_file(exported, tmp_zoo):
    zoo.release("tiny-cl", exported, "encoder", "a tiny encoder", "# tiny-cl\n")
    network = loader.load_pretrained("zoo:tiny-cl")
    assert network.source == "zoo:tiny-cl" and network.num_samples == 400
    weights = tmp_zoo / "tiny-cl" / loader.VARIABLES_FILE
    weights.write_bytes(weights.read_bytes()[:-10])  # truncated
    with pytest.raises(UserError, match=r"variables.msgpack: checksum differs"):
        loader.load_pretrained("zoo:tiny-cl")
    weights.unlink()
    with pytest.raises(UserError, match=r"variables.msgpack: file of released model zoo:tiny-cl is missing"):
        loader.load("zoo:tiny-cl")
    with pytest.raises(UserError, match=r"zoo:tiny-c1: no such released model \(did you mean tiny-cl\?\)"):
        loader.load("zoo:tiny-c1")


def test_the_shipped_registry_is_consistent():
    """Every released model's files are present and hold their checksums (the package data)."""
    for name in zoo.names():
        folder = zoo.verified_path(name)
        assert (folder / zoo.CARD).is_file()
        assert loader.kind_of(folder) == {"encoder": "pretrained", "model": "model"}[zoo.entry(name)["kind"]]


def _wfdb_records(folder: pathlib.Path, fs: float = 500.0, leads=("V1", "MLII", "I", "V5")) -> list[np.ndarray]:
    """Three records of different lengths at `fs` in an unusual lead order; returns the signals as
    wfdb reads them back (the digitised values the arrays API is then given)."""
    out = []
    for i, seconds in enumerate((4.5, 9.0, 12.3)):
        path = write_wfdb_fixture(folder, f"r{i}", signal_mv=ecg_like(int(seconds * fs), fs, len(leads), seed=i),
                                  fs=fs, lead_names=leads)
        out.append(wfdb.rdrecord(str(path)).p_signal.astype(np.float32))
    return out


def test_embed_on_arrays_equals_embed_py_on_the_same_records(exported, tmp_path):
    signals = _wfdb_records(tmp_path / "wfdb")
    summary = embed_lib.embed(str(exported), str(tmp_path / "wfdb"), str(tmp_path / "out"), progress=False)
    through_files = np.load(tmp_path / "out" / embed_lib.EMBEDDINGS_FILE)
    model = ecgjax.load(str(exported))
    from_arrays = model.embed(signals, fs=500, leads=["V1", "MLII", "I", "V5"])
    assert summary["records"] == 3 and from_arrays.shape == through_files.shape
    # The same float32 operations on the same samples in the same batches: equal but for the order
    # of the float64 window sums (none here differ in order), so exact to float32 rounding.
    np.testing.assert_allclose(from_arrays, through_files, rtol=1e-6, atol=1e-6)


@pytest.mark.usefixtures("float32_products")  # two programs: equal to float32 rounding
def test_predict_on_arrays_matches_the_store_path(classifier_dir, tmp_path):
    """What the probe scores (record_scores of store rows) and what predict gives on the raw arrays."""
    signals = _wfdb_records(tmp_path / "wfdb", leads=("I", "II", "V1"))
    ingest.ingest("wfdb", str(tmp_path / "wfdb"), str(tmp_path / "store"), target_fs=100.0, workers=1)
    store = ECGStore(tmp_path / "store")
    model = ecgjax.load(str(classifier_dir))
    order = [int(r[1:]) for r in store.metadata["record_id"]]
    stored = [store.read(i)[:, [0, 1, 6]] for i in range(len(store))]
    lengths = np.array([len(s) for s in stored])
    padded = np.zeros((len(stored), lengths.max(), 3), np.float32)
    for i, s in enumerate(stored):
        padded[i, :len(s)] = s
    via_store = model.trained.record_scores(padded, lengths)["superclass"]
    via_arrays = model.predict([signals[k] for k in order], fs=500, leads=["I", "II", "V1"])
    assert set(via_arrays) == set(CLASSES)
    stacked = np.stack([via_arrays[c] for c in CLASSES], axis=1)
    # The store keeps float16 samples (relative rounding <= 2^-11 of ~1 mV signals, i.e. <= 5e-4 mV);
    # through a network of this size that moves a sigmoid output by far less than 1e-3.
    np.testing.assert_allclose(stacked, via_store, atol=1e-3)
    labels = model.labels(via_arrays)
    np.testing.assert_array_equal(labels["MI"], (via_arrays["MI"] >= 0.4).astype(int))


@pytest.mark.parametrize("call, message", [
    (lambda m, x: m.predict(x[0], 500, ["I", "II", "V1"]), r"one record \(2000, 3\)"),
    (lambda m, x: m.predict([x[0][:, :2]], 500, ["I", "II", "V1"]), r"record 0: shape \(2000, 2\)"),
    (lambda m, x: m.predict([np.where(np.arange(2000)[:, None] == 5, np.nan, x[0])], 500, ["I", "II", "V1"]),
     "record 0: 3 samples are NaN"),
    (lambda m, x: m.predict(x, 500, ["I", "II", "V7"]), "unknown lead name 'V7'"),
    (lambda m, x: m.predict(x, 0.002, ["I", "II", "V1"]), "not an ECG sampling rate"),
    (lambda m, x: m.predict(x, 500, ["I", "II", "V2"]), r"lack \['V1'\]"),
    (lambda m, x: m.predict([x[0][:1000]], 500, ["I", "II", "V1"]), "shorter than one 4 s window"),
    (lambda m, x: m.predict(x, 500, ["I", "II", "II"]), r"\['II'\] given twice"),
])
def test_array_mistakes_are_one_line(classifier_dir, call, message):
    model = ecgjax.load(str(classifier_dir))
    x = np.stack([ecg_like(2000, 500.0, 3, seed=s) for s in range(2)]).astype(np.float32)
    with pytest.raises(UserError, match=message):
        call(model, x)


def test_an_encoder_embeds_but_does_not_predict(exported):
    model = ecgjax.load(str(exported))
    x = [ecg_like(1000, 250.0, 1, seed=0)]
    features = model.embed(x, fs=250, leads=["II"])
    assert features.shape[0] == 1 and np.isfinite(features).all() and features.std() > 0
    with pytest.raises(UserError, match="no heads to predict"):
        model.predict(x, fs=250, leads=["II"])


def test_predict_cli_on_a_folder_and_on_an_array_file(classifier_dir, tmp_path):
    signals = _wfdb_records(tmp_path / "wfdb", leads=("I", "II", "V1"))
    (tmp_path / "wfdb" / "bad.hea").write_text("bad 3 500 1000\n")  # a header with no signals: rejected
    result = entry_points.run("experiments/predict.py", f"--model={classifier_dir}", f"--input={tmp_path / 'wfdb'}",
                              f"--output={tmp_path / 'out'}", "--noprogress")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(table["record"]) == ["r0", "r1", "r2"]
    assert {*CLASSES, *(f"{c}_label" for c in CLASSES)} <= set(table.columns)
    rejected = pd.read_csv(tmp_path / "out" / "rejected.csv")
    assert list(rejected["record"]) == ["bad"]
    expected = ecgjax.load(str(classifier_dir)).predict(signals, fs=500, leads=["I", "II", "V1"])
    np.testing.assert_allclose(table["MI"], expected["MI"], atol=1e-6)  # same arrays, same network

    np.save(tmp_path / "x.npy", np.stack([s[:4000] for s in signals[1:]]))
    result = entry_points.run("experiments/predict.py", f"--model={classifier_dir}", f"--input={tmp_path / 'x.npy'}",
                              "--fs=500", "--leads=I,II,V1", f"--output={tmp_path / 'out2'}", "--noprogress")
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(tmp_path / "out2" / "predictions.csv")) == 2
    summary = json.loads((tmp_path / "out2" / "predict.json").read_text())
    assert summary["thresholds"] == {"superclass": [0.5, 0.4, 0.45, 0.5, 0.55]}

    result = entry_points.run("experiments/predict.py", f"--model={classifier_dir}", f"--input={tmp_path / 'x.npy'}",
                              f"--output={tmp_path / 'out3'}", "--noprogress")
    assert result.returncode == 2 and "pass --fs=HZ" in result.stderr and "Traceback" not in result.stderr


def test_a_released_encoder_needs_a_store_named(exported, tmp_path):
    """An exported (or released) encoder carries no store of its own: the probe says which flag."""
    result = entry_points.run("experiments/probe.py", "--config=configs/probe.py:runlocal",
                              f"--config.checkpoint={exported}", f"--workdir={tmp_path / 'probe'}")
    assert result.returncode == 2 and "--config.data.store is empty" in result.stderr, result.stderr
    assert not (tmp_path / "probe").exists()
