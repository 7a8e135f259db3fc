"""experiments/embed.py: one pooled, window-averaged embedding per record from a pretraining run,
for an ingested store and for a folder of WFDB records (real PTB-XL ones where present)."""
from __future__ import annotations

import pathlib
import re
import subprocess

import numpy as np
import pandas as pd
import pytest

from ecgjax.data import preprocess, readers, resolve
from ecgjax.data.sources import ptbxl
from ecgjax.errors import UserError
from ecgjax.eval import embed
from ecgjax.models import registry
from ecgjax.train import loop
import entry_points
from fixtures import write_wfdb_fixture

WINDOW = 2500  # hybrid runlocal: 10 s at 250 Hz


@pytest.fixture(scope="module")
def run_dir(pretrained_run):
    """A 2-step hybrid (ViT) pretraining run on a tiny synthetic cohort (tests/conftest.py)."""
    return pretrained_run


@pytest.fixture(scope="module")
def encode(run_dir):
    """windows [N, 2500, 12] -> [N, D]: the run's encoder applied directly, no embed code involved."""
    config, _, variables = loop.restore_pretrained(str(run_dir))
    encoder = registry.build_encoder(config.model.encoder.to_dict())
    weights = loop.encoder_variables(variables)
    return lambda windows: np.asarray(encoder.apply(weights, np.asarray(windows, np.float32), train=False))


@pytest.fixture(scope="module")
def wfdb_dir(tmp_path_factory):
    """23 s of 12 leads at 500 Hz (3 windows at 250 Hz), 6 s of 3 leads at 100 Hz (1 padded
    window) and a record whose signal file was cut short."""
    folder = tmp_path_factory.mktemp("wfdb")
    write_wfdb_fixture(folder, "long500", fs=500.0, seconds=23.0, seed=1)
    write_wfdb_fixture(folder, "short100", fs=100.0, seconds=6.0, lead_names=("I", "II", "V1"), seed=2)
    broken = write_wfdb_fixture(folder, "broken", fs=250.0, seconds=10.0, seed=3)
    data = pathlib.Path(f"{broken}.dat")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    return folder


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return entry_points.run("experiments/embed.py", *args, "--noprogress")


def read_output(directory) -> tuple[np.ndarray, pd.DataFrame]:
    table = pd.read_csv(directory / "embeddings.csv", dtype={"record_id": str, "patient_id": str})
    return np.load(directory / "embeddings.npy"), table


def preprocessed(path) -> np.ndarray:
    """[time, 12] at 250 Hz, as ingest would store it."""
    record = readers.read_wfdb(path, allow_flat_leads=True)
    return preprocess.preprocess_record(record, target_fs=250.0, validate=False, allow_flat_leads=True)[0]


def test_store_split_gives_one_embedding_per_record(run_dir, encode, tmp_path):
    store = resolve.open_store(loop.load_config(str(run_dir)).data)
    indices = store.split_indices("train")
    output = tmp_path / "out"
    result = run_cli(f"--checkpoint={run_dir}", f"--input={store.path}", "--split=train",
                     f"--output={output}", "--batch_size=5")
    assert result.returncode == 0, result.stderr[-3000:]
    z, table = read_output(output)
    assert z.dtype == np.float32 and z.shape[0] == len(indices) > 5 and np.isfinite(z).all()
    assert list(table.columns) == ["row", "record_id", "patient_id", "num_windows"]
    assert table["row"].tolist() == list(range(len(indices)))
    assert table["record_id"].tolist() == store.metadata["record_id"].iloc[indices].tolist()
    assert table["patient_id"].tolist() == store.metadata["patient_id"].iloc[indices].tolist()
    assert (table["num_windows"] == 1).all()  # synthetic records are exactly one 10 s window
    # Batches of 5 straddle records; each row must still be its own record's features.
    direct = encode(np.stack([store.read(int(i)) for i in indices[:7]]))
    np.testing.assert_allclose(z[:7], direct, rtol=1e-4, atol=1e-5)
    assert not np.allclose(z[0], z[1])
    assert pd.read_csv(output / "rejected.csv").empty


def test_wfdb_folder_window_means_and_rejected_record(run_dir, encode, wfdb_dir, tmp_path):
    output = tmp_path / "out"
    result = run_cli(f"--checkpoint={run_dir}", f"--input={wfdb_dir}", f"--output={output}", "--batch_size=2")
    assert result.returncode == 0, result.stderr[-3000:]
    z, table = read_output(output)
    assert list(table.columns) == ["row", "record_id", "patient_id", "num_windows", "path"]
    assert table["record_id"].tolist() == ["long500", "short100"]  # folder order, broken one skipped
    assert table["patient_id"].tolist() == ["long500", "short100"]  # WFDB: the record name
    assert table["num_windows"].tolist() == [3, 1]
    assert table["path"].tolist() == [str(wfdb_dir / "long500.hea"), str(wfdb_dir / "short100.hea")]
    assert z.shape == (2, encode(np.zeros((1, WINDOW, 12))).shape[1]) and np.isfinite(z).all()

    long = preprocessed(wfdb_dir / "long500")
    assert long.shape == (5750, 12)
    windows = np.stack([long[0:2500], long[2500:5000], long[3250:5750]])  # last one aligned to the end
    np.testing.assert_allclose(z[0], encode(windows).mean(axis=0), rtol=1e-4, atol=1e-5)
    short = preprocessed(wfdb_dir / "short100")
    padded = np.zeros((1, WINDOW, 12), np.float32)
    padded[0, :len(short)] = short
    np.testing.assert_allclose(z[1], encode(padded)[0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(z[0], z[1])

    rejected = pd.read_csv(output / "rejected.csv")
    assert rejected["record"].tolist() == ["broken"]
    assert "broken" in rejected["path"][0] and rejected["reason"][0]
    assert "skipped broken" in result.stderr


def test_record_windows_cover_the_record():
    signal = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
    windows = embed.record_windows(signal, 10)
    assert windows.shape == (3, 10, 2)
    np.testing.assert_array_equal(windows[:, 0, 0], [0, 20, 26])  # starts 0, 10, 13 (end-aligned)
    np.testing.assert_array_equal(embed.record_windows(signal, 20)[:, -1], signal[[19, 22]])
    short = embed.record_windows(signal[:4], 10)
    assert short.shape == (1, 10, 2) and (short[0, 4:] == 0).all()
    np.testing.assert_array_equal(short[0, :4], signal[:4])


def test_user_mistakes_are_named(run_dir, wfdb_dir, tmp_path):
    def fails(match, checkpoint=str(run_dir), input_path=str(wfdb_dir), **kwargs):
        with pytest.raises(UserError, match=match):
            embed.embed(checkpoint, input_path, str(tmp_path / "out"), progress=False, **kwargs)

    fails("no such directory", checkpoint=str(tmp_path / "nope"))
    fails(f"checkpoints folder, not the run; pass --checkpoint={re.escape(str(run_dir))}$", checkpoint=str(run_dir / "checkpoints"))
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "not_a_run" / "notes.txt").write_text("x")
    fails(r"not a pretraining run \(no config.json\)", checkpoint=str(tmp_path / "not_a_run"))
    fails("no such file or directory", input_path=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    fails("no WFDB records", input_path=str(tmp_path / "empty"))
    fails("--split=test selects records of an ingested store", split="test")
    store = resolve.open_store(loop.load_config(str(run_dir)).data)
    fails("no records of .* in that split", input_path=str(store.path), split="tset")
    fails("--batch_size=0", batch_size=0)
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    for suffix in (".hea", ".dat"):
        (only_bad / f"broken{suffix}").write_bytes((wfdb_dir / f"broken{suffix}").read_bytes())
    fails("no usable records \\(1 rejected", input_path=str(only_bad))
    assert pd.read_csv(tmp_path / "out" / "rejected.csv")["record"].tolist() == ["broken"]


def test_cli_reports_a_bad_checkpoint_in_one_line(tmp_path):
    result = run_cli(f"--checkpoint={tmp_path / 'nope'}", f"--input={tmp_path}", f"--output={tmp_path / 'out'}")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: --checkpoint={tmp_path / 'nope'}: no such directory")
    assert "Traceback" not in result.stderr


def test_ptbxl_records_from_a_wfdb_folder(run_dir, ptbxl_dir, tmp_path):
    table = ptbxl.load_ptbxl_table(ptbxl_dir)
    folder = tmp_path / "ptbxl"
    folder.mkdir()
    names = []
    for filename in table["filename"].iloc[:3]:  # 'records100/00000/00001_lr'
        source = ptbxl_dir / filename
        for file in source.parent.glob(source.name + "*"):
            (folder / file.name).symlink_to(file)
        names.append(source.name)
    summary = embed.embed(str(run_dir), str(folder), str(tmp_path / "out"), batch_size=2, progress=False)
    z, out = read_output(tmp_path / "out")
    assert summary["records"] == 3 and summary["rejected"] == 0
    assert out["record_id"].tolist() == sorted(names) and (out["num_windows"] == 1).all()
    assert z.shape[0] == 3 and np.isfinite(z).all() and not np.allclose(z[0], z[1])
