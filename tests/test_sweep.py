"""The 81-model grid and its sweep: cell selection, status/resume, failures, and a real tiny sweep."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import jax
import ml_collections
import pytest

import entry_points
from xla_settings import unoptimized
from ecgjax.data.ingest import build_synthetic_store
from ecgjax.errors import UserError
from ecgjax.eval.report import read_runs
from ecgjax.sweep import budget, claims, grid as grid_lib, runner, selection, status

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = os.path.join(REPO, "configs/grid.py")
# runlocal shrinks both encoders to depth 2, width 64: the second cell's programs come from
# the compilation cache (see `compilation_cache`).
TWO_CELLS = "gl-p125-d2-w256,gl-p125-d4-w512"


def grid(arg="runlocal", cells=TWO_CELLS):
    config = grid_lib.load_config_file(GRID, arg)
    config.cells = cells
    return config


# ------------------------------------------------------------------------ grid and selection

def test_full_grid_is_the_81_cells_in_003_order():
    cells = grid_lib.grid_cells(grid("", cells=""))
    names = [c.name for c in cells]
    assert len(cells) == 81 and len(set(names)) == 81
    # Within a method the index is 003 App. C's case number: case 13 = patch 125, depth 4, width 512.
    assert names[13] == "cl-p125-d4-w512" and names[27 + 8] == "gl-p60-d8-w1024"
    assert names[54 + 13] == "hl-p125-d4-w512" and cells[54 + 13].report_cell == dict(
        patch=125, depth=4, width=512, method="HL")


def test_select_cells_by_index_range_name_and_glob():
    cells = grid_lib.grid_cells(grid("", cells=""))
    pick = lambda s: [c.name for c in selection.select_cells(cells, s)]  # noqa: E731
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
    hl = grid_lib.pretrain_config(config, grid_lib.Cell("hl", 60, 8, 1024))
    enc = hl.model.encoder
    assert (enc.patch, enc.depth, enc.width, hl.model.decoder.width) == (60, 8, 1024, 512)
    assert hl.objective.method == "hl" and hl.train.num_steps == 1234 and hl.data.store == "/data/ptbxl"
    cl = grid_lib.pretrain_config(config, grid_lib.Cell("cl", 250, 2, 256))
    assert cl.objective.weights.reconstruction == 0.0 and cl.model.encoder.patch == 250
    assert tuple(config.probe.tasks) == ("MI", "STTC", "CD", "HYP")
    probe = grid_lib.probe_config(config, "finetune", "MI", "/runs/x/pretrain")
    assert (probe.mode, probe.task, probe.checkpoint, probe.seeds, probe.data.store) == (
        "finetune", "MI", "/runs/x/pretrain", 3, "/data/ptbxl")
    config.pretrain.overrides = ml_collections.ConfigDict(dict(train=dict(no_such_field=1)))
    with pytest.raises(ValueError, match="train.no_such_field"):
        grid_lib.pretrain_config(config, grid_lib.Cell("hl", 60, 8, 1024))


def test_describe_failure_names_out_of_memory():
    oom = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.1GiB.")
    assert runner.describe_failure(oom)["reason"] == "out of memory (JaxRuntimeError)"
    assert runner.describe_failure(MemoryError())["reason"] == "out of memory (MemoryError)"
    other = runner.describe_failure(ValueError("bad config: train.batch_size=0 must be > 0\nmore"))
    assert other == dict(type="ValueError", message="bad config: train.batch_size=0 must be > 0\nmore",
                         reason="ValueError: bad config: train.batch_size=0 must be > 0")


def test_dry_run_lists_81_cells_and_runs_nothing(tmp_path, monkeypatch):
    """The dry run lists and compiles nothing unless --budget asks (it compiled every cell by default:
    3 min 22 s and 1.5 GB for 3 runlocal cells); --budget without --dry_run is refused."""
    monkeypatch.setattr(budget, "_compile_cost", lambda c: pytest.fail("a plain dry run compiled a cell"))
    result = entry_points.run("experiments/sweep.py", f"--config={GRID}", f"--workdir={tmp_path / 'w'}", "--dry_run")
    out = result.stdout
    assert result.returncode == 0, result.stderr
    rows = [line for line in out.splitlines() if line.startswith("| ") and "pending" in line]
    assert out.startswith("81 cells: 0 done, 0 failed, 0 running, 81 pending") and len(rows) == 81 and "| 67 | hl-p125-d4-w512 | pending" in out
    assert "budget: not computed; add --budget" in out
    assert not (tmp_path / "w").exists()
    refused = entry_points.run("experiments/sweep.py", f"--config={GRID}", f"--workdir={tmp_path / 'w'}", "--budget")
    assert refused.returncode == 2 and "error: --budget sizes the cells of a dry run: add --dry_run" in refused.stderr
    assert not (tmp_path / "w").exists()


def test_dry_run_budget_compiles_each_cell_once_and_projects_device_hours(tmp_path, monkeypatch):
    """Two runlocal cells: the first dry run compiles them (and caches), the second reads the
    cache back without compiling; hours follow the stated formula; a small memory flags a cell."""
    cache = tmp_path / "cache"
    args = ["experiments/sweep.py", f"--config={GRID}:runlocal", f"--workdir={tmp_path / 'w'}",
            "--cells=gl-p125-d2-w256,hl-p125-d2-w256", "--dry_run", "--budget", f"--budget_cache={cache}",
            "--peak_tflops=100", "--mfu=0.5"]
    first = entry_points.run(*args)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("budget: compiling") == 2 and len(list(cache.glob("*.json"))) == 2
    assert "Total for 2 cells:" in first.stdout and "at 100 TFLOP/s peak x 50% MFU" in first.stdout
    assert f"budget: 0 of 2 cells read from the cache in {cache}, 2 compiled now" in first.stdout
    assert not (tmp_path / "w").exists()
    monkeypatch.setattr(budget, "_compile_cost", lambda c: pytest.fail("a cached cell was compiled again"))
    again = entry_points.run(*args)
    assert f"budget: 2 of 2 cells read from the cache in {cache}, 0 compiled now" in again.stdout

    config = grid(cells="gl-p125-d2-w256,hl-p125-d2-w256")
    cells = selection.select_cells(grid_lib.grid_cells(config), config.cells)
    rows = budget.cell_budgets(config, cells, cache_dir=cache)  # the CLI's defaults: bf16
    assert [r.name for r in rows] == ["gl-p125-d2-w256", "hl-p125-d2-w256"] and all(r.cached for r in rows)
    gl, hl = rows
    assert hl.flops_per_step > gl.flops_per_step > 0 and hl.memory_bytes > 0 and gl.num_steps == 20
    assert gl.device_hours(100, 0.5) == pytest.approx(20 * gl.flops_per_step / (100e12 * 0.5) / 3600)
    # what printed is what the cache holds
    assert f"| 63 | hl-p125-d2-w256 | {hl.params / 1e6:.1f} | 16 | 20 | bf16 | {hl.flops_per_step / 1e12:.4g} |" in first.stdout
    limit = (gl.memory_bytes + hl.memory_bytes) / 2 / 2 ** 30  # between the two
    table = budget.budget_table(rows, device_memory_gib=limit)
    assert f"1 cell does not fit {limit:g} GiB: {max(rows, key=lambda r: r.memory_bytes).name}" in table
    # a change to the compiled config is another cache entry
    config.pretrain.batch_size = 8
    monkeypatch.setattr(budget, "_compile_cost", lambda c: {"params": 1, "flops": 2.0, "memory_bytes": 3,
                                                            "backend": "cpu"})
    assert not budget.cell_budgets(config, cells[:1], cache_dir=cache)[0].cached


# ------------------------------------------------------------ status, failures, resume (fake stages)

class FakeStages:
    """Stands in for pretraining / probing; records calls, raises where told."""

    def __init__(self, monkeypatch, fail: dict | None = None):
        self.calls, self.fail = [], dict(fail or {})
        monkeypatch.setattr(runner, "run_pretrain_stage", lambda c, cell, d: self._call(cell, "pretrain"))
        monkeypatch.setattr(runner, "run_probe_stage",
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
    statuses = runner.run_sweep(config, tmp_path, report=False)
    stages = ["pretrain", *grid_lib.probe_stages(config)]
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
    runner.run_sweep(config, tmp_path, retry_failed=False, report=False)
    assert fake.calls == []
    # ... or retried, from the stage that failed.
    statuses = runner.run_sweep(config, tmp_path, report=False)
    assert [s.state(stages) for s in statuses] == ["done"] * 3 and statuses[1].attempts == 2
    assert [c for c in fake.calls if c[0] == "cl-p60-d2-w1024"] == [
        ("cl-p60-d2-w1024", "finetune:wide_qrs"), ("cl-p60-d2-w1024", "finetune:st_elevation")]


def test_interrupted_sweep_resumes_where_it_stopped(tmp_path, monkeypatch):
    config = grid(cells="0,1")
    fake = FakeStages(monkeypatch, fail={("cl-p60-d2-w512", "linear:st_elevation"): KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        runner.run_sweep(config, tmp_path, report=False)
    statuses = status.load_statuses(config, tmp_path)
    stages = ["pretrain", *grid_lib.probe_stages(config)]
    assert [s.state(stages) for s in statuses] == ["done", "running"]
    assert "| 1 | cl-p60-d2-w512 | running | done | 1/2 | pending |" in status.status_table(config, statuses)
    fake.calls.clear()
    statuses = runner.run_sweep(config, tmp_path, report=False)
    assert [s.state(stages) for s in statuses] == ["done", "done"]
    assert fake.calls == [("cl-p60-d2-w512", "linear:st_elevation"), ("cl-p60-d2-w512", "finetune:wide_qrs"),
                          ("cl-p60-d2-w512", "finetune:st_elevation")]


# ------------------------------------------------------------------------ jobs on a cluster

def test_shards_are_disjoint_cover_the_selection_and_are_deterministic():
    cells = grid_lib.grid_cells(grid("", cells=""))
    shards = [selection.shard_cells(cells, (i, 4)) for i in range(4)]
    names = [c.name for shard in shards for c in shard]
    assert sorted(names) == sorted(c.name for c in cells) and len(names) == len(set(names)) == 81
    assert [len(s) for s in shards] == [21, 20, 20, 20]
    assert shards[1] == selection.shard_cells(cells, (1, 4))
    assert {c.method for c in shards[3]} == {"cl", "gl", "hl"}  # every job gets a mix, not one method
    assert selection.parse_shard("2/9") == (2, 9) and selection.parse_shard(None) is None
    slurm = dict(SLURM_ARRAY_TASK_ID="5", SLURM_ARRAY_TASK_COUNT="9", SLURM_ARRAY_TASK_MIN="1")
    assert selection.parse_shard("slurm", slurm) == (4, 9)
    for bad in ("9/9", "1-4", "a/b", "3"):
        with pytest.raises(UserError, match=f"--shard={bad}: expected i/n"):
            selection.parse_shard(bad)
    with pytest.raises(UserError, match="outside a SLURM job array.*SLURM_ARRAY_TASK_ID"):
        selection.parse_shard("slurm", {})


def test_a_claimed_cell_is_not_claimed_again_until_released_or_stale(tmp_path, monkeypatch):
    cell = grid_lib.Cell("hl", 125, 4, 512)
    first = claims.claim_cell(tmp_path, cell)
    assert first is not None and claims.claim_owner(tmp_path, cell)["pid"] == os.getpid()
    assert claims.claim_cell(tmp_path, cell) is None
    first.release()
    second = claims.claim_cell(tmp_path, cell)
    assert second is not None
    # A job that stopped refreshing its claim (a dead host) loses it after CLAIM_STALE_S ...
    path = status.cell_dir(tmp_path, cell) / claims.CLAIM_FILE
    old = time.time() - claims.CLAIM_STALE_S - 1
    os.utime(path, (old, old))
    third = claims.claim_cell(tmp_path, cell)
    assert third is not None
    second._stop.set()  # its heartbeat would refresh the new claim's file
    # ... and a claim of a process of this host that is gone is stale at once.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = json.loads(path.read_text())
    path.write_text(json.dumps(dict(owner, pid=int(dead.stdout))))
    assert claims.claim_cell(tmp_path, cell) is not None
    assert [p.name for p in path.parent.iterdir()] == [claims.CLAIM_FILE]  # no stale leftovers


def test_concurrent_jobs_never_run_the_same_cell(tmp_path, monkeypatch):
    """Two jobs over the same cells at once (threads here; jobs on a cluster): every stage runs once."""
    config = grid(cells="0-5")
    fake = FakeStages(monkeypatch)
    original = fake._call

    def slow_call(cell, stage):
        time.sleep(0.05)  # long enough for the other job to reach the same cell
        return original(cell, stage)

    fake._call = slow_call
    jobs = [threading.Thread(target=runner.run_sweep, args=(config, tmp_path), kwargs=dict(report=False))
            for _ in range(2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    stages = ["pretrain", *grid_lib.probe_stages(config)]
    expected = sorted((c.name, s) for c in selection.select_cells(grid_lib.grid_cells(config), "0-5") for s in stages)
    assert sorted(fake.calls) == expected  # each (cell, stage) exactly once
    assert "6 cells: 6 done" in (tmp_path / "sweep.md").read_text()
    assert not list(tmp_path.glob("cells/*/claim.json")) and not list(tmp_path.glob("**/*.tmp-*"))


def test_sharded_jobs_merge_into_one_status_table(tmp_path, monkeypatch):
    config = grid(cells="0-4")
    fake = FakeStages(monkeypatch)
    runner.run_sweep(config, tmp_path, shard=(1, 2), report=False)
    assert sorted({name for name, _ in fake.calls}) == ["cl-p60-d2-w512", "cl-p60-d4-w256"]  # cells 1 and 3
    table = (tmp_path / "sweep.md").read_text()
    assert "5 cells: 2 done, 0 failed, 0 running, 3 pending" in table
    runner.run_sweep(config, tmp_path, shard=(0, 2), report=False)
    assert "5 cells: 5 done" in (tmp_path / "sweep.md").read_text()
    dry = entry_points.run("experiments/sweep.py", f"--config={GRID}:runlocal", f"--workdir={tmp_path}",
                           "--cells=0-4", "--shard=1/2", "--dry_run")
    assert dry.stdout.startswith("2 cells: 2 done"), dry.stdout + dry.stderr
    bad = entry_points.run("experiments/sweep.py", f"--config={GRID}", f"--workdir={tmp_path}", "--shard=2/2",
                           "--dry_run")
    assert bad.returncode == 2 and "error: --shard=2/2: expected i/n" in bad.stderr, bad.stderr


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
    with unoptimized():  # its checks are of stages, files and the report, not of numbers
        return config, workdir, runner.run_sweep(config, workdir)


def test_real_sweep_runs_every_stage_and_renders_the_report(real_sweep):
    config, workdir, statuses = real_sweep
    assert [s.state(["pretrain", "linear:wide_qrs", "finetune:wide_qrs"]) for s in statuses] == ["done", "done"]
    for s in statuses:
        assert (status.cell_dir(workdir, s.cell) / "pretrain" / "checkpoints").is_dir()
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
    statuses = runner.run_sweep(config, workdir)
    assert fake.calls == [] and all(s.error is None for s in statuses)
    assert len(read_runs(workdir)) == 4
