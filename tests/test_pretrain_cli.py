"""`experiments/pretrain.py` end to end for every pretraining config, on the embedded synthetic
cohort and on an ingested PTB-XL store (a few steps each; the real entry point, in this process:
tests/entry_points.py). What is checked is the run's flow and files, not its numbers: XLA's
optimisations are off (conftest `unoptimized`), which halves the compilations."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

import entry_points

from ecgjax.data import ingest
from ecgjax.data.sources import ptbxl

pytestmark = pytest.mark.usefixtures("unoptimized_xla")
CONFIGS = ("hybrid", "contrastive", "generative", "cpc", "pclr_resnet", "cl_resnet")


def run_pretrain(config: str, workdir, *overrides: str) -> subprocess.CompletedProcess:
    return entry_points.run("experiments/pretrain.py", f"--config=configs/{config}.py:runlocal", f"--workdir={workdir}",
                            "--config.train.num_steps=2", "--config.train.batch_size=8", "--config.train.log_every=1",
                            *overrides)


def check_run(result: subprocess.CompletedProcess, workdir, expected_parts) -> None:
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [line["step"] for line in lines] == [1, 2]
    for part in expected_parts + ("loss", "lr", "grad_norm", "segments_per_s"):
        assert part in lines[-1], (part, lines[-1])
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(workdir, "tensorboard")))
    assert "step 2/2" in result.stderr


@pytest.fixture(scope="module")
def synthetic_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


PARTS = {"hybrid": ("reconstruction", "patient", "sample"), "contrastive": ("patient", "sample"),
         "generative": ("reconstruction",), "cpc": ("cpc",), "pclr_resnet": ("patient", "nt_xent"),
         "cl_resnet": ("patient", "sample", "interlead")}


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_pretrains_on_the_synthetic_cohort(config, tmp_path, synthetic_cache):
    workdir = tmp_path / config
    result = run_pretrain(config, workdir, f"--config.data.synthetic.cache_dir={synthetic_cache}",
                          "--config.data.synthetic.num_patients=24",
                          "--config.data.synthetic.records_per_patient=2")
    check_run(result, workdir, PARTS[config])


@pytest.fixture(scope="module")
def ptbxl_store(ptbxl_dir, tmp_path_factory):
    """40 real PTB-XL records ingested at 250 Hz."""
    table = ptbxl.load_ptbxl_table(ptbxl_dir)
    ids = table["ecg_id"].iloc[:40].tolist()
    output = tmp_path_factory.mktemp("ptbxl_store")
    ingest.ingest_records(ptbxl.read_ptbxl(ptbxl_dir, ecg_ids=ids), output)
    return str(output)


@pytest.mark.parametrize("config", ["hybrid", "pclr_resnet"])
def test_pretrains_on_an_ingested_ptbxl_store(config, tmp_path, ptbxl_store):
    workdir = tmp_path / config
    result = run_pretrain(config, workdir, f"--config.data.store={ptbxl_store}")
    check_run(result, workdir, PARTS[config])
