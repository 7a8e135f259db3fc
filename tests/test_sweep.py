"""The 81-model grid and its sweep: cell selection, status/resume, failures, and a real tiny sweep."""
from __future__ import annotations

import os
import subprocess
import sys

import jax
import ml_collections
import pytest

from ecgjax.data.ingest import build_synthetic_store
from ecgjax.eval import sweep
from ecgjax.eval.report import read_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = os.path.join(REPO, "configs/grid.py")
# runlocal shrinks both encoders to depth 2, width 64: the second cell's programs come from
# the compilation cache (see `compilation_cache`).
TWO_CELLS = "gl-p125-d2-w256,gl-p125-d4-w512"


def grid(arg="runlocal", cells=TWO_CELLS):
    config = sweep.load_config_file(GRID, arg)
    config.cells = cells
    return config


# ------------------------------------------------------------------------ grid and selection

def test_full_grid_is_the_81_cells_in_003_order():
    cells = sweep.grid_cells(grid("", cells=""))
    names = [c.name for c in cells]
    assert len(cells) == 81 and len(set(names)) == 81
    # Within a method the index is 003 App. C's case number: case 13 = patch 125, depth 4, width 512.
    assert names[13] == "cl-p125-d4-w512" and names[27 + 8] == "gl-p60-d8-w1024"
    assert names[54 + 13] == "hl-p125-d4-w512" and cells[54 + 13].report_cell == dict(
        patch=125, depth=4, width=512, method="HL")


def test_select_cells_by_index_range_name_and_glob():
    cells = sweep.grid_cells(grid("", cells=""))
    pick = lambda s: [c.name for c in sweep.select_cells(cells, s)]  # noqa: E731
    assert len(pick("")) == 81
    assert pick("80,0") == ["cl-p60-d2-w256", "hl-p250-d8-w1024"]  # grid order, not given order
    assert pick("1-2") == ["cl-p60-d2-w512", "cl-p60-d2-w1024"]
    assert pick("hl-p125-d4-w512, 67") == ["hl-p125-d4-w512"]  # duplicates collapse
    assert pick("*-p250-d8-*") == ["cl-p250-d8-w256", "cl-p250-d8-w512", "cl-p250-d8-w1024",
                                   "gl-p250-d8-w256", "gl-p250-d8-w512", "gl-p250-d8-w1024",
                                   "hl-p250-d8-w256", "hl-p250-d8-w512", "hl-p250-d8-w1024"]
    with pytest.raises(ValueError, match="matches no cell"):
        pick("hl-p100-*")
    with pytest.raises(ValueError, match="out of range"):
        pick("79-81")


def test_cell_configs_reuse_the_method_configs():
    config = grid("store=/data/ptbxl,steps=1234", cells="")
    hl = sweep.pretrain_config(config, sweep.Cell("hl", 60, 8, 1024))
    enc = hl.model.encoder
    assert (enc.patch, enc.depth, enc.width, hl.model.decoder.width) == (60, 8, 1024, 512)
    assert hl.objective.method == "hl" and hl.train.num_steps == 1234 and hl.data.store == "/data/ptbxl"
    cl = sweep.pretrain_config(config, sweep.Cell("cl", 250, 2, 256))
    assert cl.objective.weights.reconstruction == 0.0 and cl.model.encoder.patch == 250
    assert tuple(config.probe.tasks) == ("MI", "STTC", "CD", "HYP")
    probe = sweep.probe_config(config, "finetune", "MI", "/runs/x/pretrain")
    assert (probe.mode, probe.task, probe.checkpoint, probe.seeds, probe.data.store) == (
        "finetune", "MI", "/runs/x/pretrain", 3, "/data/ptbxl")
    config.pretrain.overrides = ml_collections.ConfigDict(dict(train=dict(no_such_field=1)))
    with pytest.raises(ValueError, match="train.no_such_field"):
        sweep.pretrain_config(config, sweep.Cell("hl", 60, 8, 1024))


def test_describe_failure_names_out_of_memory():
    oom = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.1GiB.")
    assert sweep.describe_failure(oom)["reason"] == "out of memory (JaxRuntimeError)"
    assert sweep.describe_failure(MemoryError())["reason"] == "out of memory (MemoryError)"
    other = sweep.describe_failure(ValueError("bad config: train.batch_size=0 must be > 0\nmore"))
    assert other == dict(type="ValueError", message="bad config: train.batch_size=0 must be > 0\nmore",
                         reason="ValueError: bad config: train.batch_size=0 must be > 0")


def test_dry_run_lists_81_cells_and_runs_nothing(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(REPO, "experiments/sweep.py"), f"--config={GRID}",
                          f"--workdir={tmp_path / 'w'}", "--dry_run"],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and "pending" in line]
    assert out.startswith("81 cells: 0 done, 0 failed, 0 running, 81 pending") and len(rows) == 81 and "| 67 | hl-p125-d4-w512 | pending" in out
    assert not (tmp_path / "w").exists()


# ------------------------------------------------------------ status, failures, resume (fake stages)

class FakeStages:
    """Stands in for pretraining / probing; records calls, raises where told."""

    def __init__(self, monkeypatch, fail: dict | None = None):
        self.calls, self.fail = [], dict(fail or {})
        monkeypatch.setattr(sweep, "run_pretrain_stage", lambda c, cell, d: self._call(cell, "pretrain"))
        monkeypatch.setattr(sweep, "run_probe_stage",
                            lambda c, cell, d, mode, task: self._call(cell, f"{mode}:{task}"))

    def _call(self, cell, stage):
        self.calls.append((cell.name, stage))
        error = self.fail.pop((cell.name, stage), None)
        if error is not None:
            raise error
        return {"loss": 1.0}


def test_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    config = grid(cells="0-2")
    oom = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 1.0GiB")
    fake = FakeStages(monkeypatch, fail={("cl-p60-d2-w512", "pretrain"): oom,
                                         ("cl-p60-d2-w1024", "finetune:wide_qrs"): ValueError("no positives")})
    statuses = sweep.run_sweep(config, tmp_path, report=False)
    stages = ["pretrain", *sweep.probe_stages(config)]
    assert [s.state(stages) for s in statuses] == ["done", "failed", "failed"]
    assert statuses[1].error == dict(stage="pretrain", type="JaxRuntimeError", reason="out of memory (JaxRuntimeError)",
                                     message="RESOURCE_EXHAUSTED: Out of memory allocating 1.0GiB")
    assert statuses[2].error["reason"] == "ValueError: no positives"
    assert statuses[2].stage_state("linear:st_elevation") == "done"  # stages before the failure kept
    assert ("cl-p60-d2-w1024", "pretrain") in fake.calls  # the sweep went on after the OOM
    table = (tmp_path / "sweep.md").read_text()
    assert "1 done, 2 failed" in table and "## Failures" in table
    assert "| 1 | cl-p60-d2-w512 | failed | failed | pending | pending | pretrain: out of memory" in table
    assert "| 2 | cl-p60-d2-w1024 | failed | done | done | failed | finetune:wide_qrs: ValueError" in table

    # Known failures can be left alone ...
    fake.calls.clear()
    sweep.run_sweep(config, tmp_path, retry_failed=False, report=False)
    assert fake.calls == []
    # ... or retried, from the stage that failed.
    statuses = sweep.run_sweep(config, tmp_path, report=False)
    assert [s.state(stages) for s in statuses] == ["done"] * 3 and statuses[1].attempts == 2
    assert [c for c in fake.calls if c[0] == "cl-p60-d2-w1024"] == [
        ("cl-p60-d2-w1024", "finetune:wide_qrs"), ("cl-p60-d2-w1024", "finetune:st_elevation")]


def test_interrupted_sweep_resumes_where_it_stopped(tmp_path, monkeypatch):
    config = grid(cells="0,1")
    fake = FakeStages(monkeypatch, fail={("cl-p60-d2-w512", "linear:st_elevation"): KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(config, tmp_path, report=False)
    statuses = sweep.load_statuses(config, tmp_path)
    stages = ["pretrain", *sweep.probe_stages(config)]
    assert [s.state(stages) for s in statuses] == ["done", "running"]
    assert "| 1 | cl-p60-d2-w512 | running | done | 1/2 | pending |" in sweep.status_table(config, statuses)
    fake.calls.clear()
    statuses = sweep.run_sweep(config, tmp_path, report=False)
    assert [s.state(stages) for s in statuses] == ["done", "done"]
    assert fake.calls == [("cl-p60-d2-w512", "linear:st_elevation"), ("cl-p60-d2-w512", "finetune:wide_qrs"),
                          ("cl-p60-d2-w512", "finetune:st_elevation")]


# ---------------------------------------------------------------- a real runlocal sweep, 2 cells

@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """JAX's persistent compilation cache, on for this module's real sweep only."""
    from jax.experimental.compilation_cache import compilation_cache as cache

    settings = dict(jax_compilation_cache_dir=str(tmp_path_factory.mktemp("jax_cache")),
                    jax_persistent_cache_min_compile_time_secs=0.0,
                    jax_persistent_cache_min_entry_size_bytes=0)
    previous = {name: getattr(jax.config, name) for name in settings}
    for name, value in settings.items():
        jax.config.update(name, value)
    cache.reset_cache()
    yield
    for name, value in previous.items():
        jax.config.update(name, value)
    cache.reset_cache()


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory, compilation_cache):
    """Two GL cells, 2 pretraining steps each, one task linear-probed and fine-tuned once."""
    store = build_synthetic_store(tmp_path_factory.mktemp("sweep") / "store", 48, 2, seed=0)
    config = grid()
    config.data.store = str(store.path)
    config.pretrain.num_steps = 2
    config.probe.tasks = ("wide_qrs",)
    config.probe.overrides = ml_collections.ConfigDict(dict(
        bootstrap=10, optim=dict(batch_size=16, eval_batch_size=32, linear_epochs=2, epochs=1)))
    workdir = tmp_path_factory.mktemp("sweep") / "run"
    return config, workdir, sweep.run_sweep(config, workdir)


def test_real_sweep_runs_every_stage_and_renders_the_report(real_sweep):
    config, workdir, statuses = real_sweep
    assert [s.state(["pretrain", "linear:wide_qrs", "finetune:wide_qrs"]) for s in statuses] == ["done", "done"]
    for s in statuses:
        assert (sweep.cell_dir(workdir, s.cell) / "pretrain" / "checkpoints").is_dir()
        assert s.stages["pretrain"]["result"]["reconstruction"] > 0
    runs = read_runs(workdir)
    # Runs carry the grid cell, not the runlocal-shrunk encoder (depth 2, width 64).
    assert sorted((r.cell["patch"], r.cell["depth"], r.cell["width"], r.cell["method"], r.mode) for r in runs) == [
        (125, 2, 256, "GL", "finetune"), (125, 2, 256, "GL", "linear"),
        (125, 4, 512, "GL", "finetune"), (125, 4, 512, "GL", "linear")]
    assert not list(workdir.glob("cells/*/eval/*/GL_p125_d2_w64"))  # the encoder-named copies are gone
    report = (workdir / "report" / "report.md").read_text()
    assert "## Linear probing per cell" in report and "## Fine-tuning per cell" in report
    assert "| 1 | 125 | 4 | 512 |" in report and "AUROC wide_qrs" in report
    assert "2 cells: 2 done" in (workdir / "sweep.md").read_text()


def test_real_sweep_resumes_without_redoing_finished_cells(real_sweep, monkeypatch):
    config, workdir, _ = real_sweep
    fake = FakeStages(monkeypatch)
    statuses = sweep.run_sweep(config, workdir)
    assert fake.calls == [] and all(s.error is None for s in statuses)
    assert len(read_runs(workdir)) == 4
