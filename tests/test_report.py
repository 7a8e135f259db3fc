"""Report from a synthetic tree of run JSONs: schema round trip, table numbers, figures, CLI."""
import json

import numpy as np
import pytest

import entry_points
from ecgjax.data.errors import ECGInputError
from ecgjax.eval.report import write_report
from ecgjax.eval.runs import RunRecord, read_runs, write_run_json

TASKS = ("MI", "STTC", "CD", "HYP")
METHODS = ("CL", "GL", "HL")
CELLS = [(60, 2, 256), (60, 4, 256), (125, 2, 256), (125, 4, 512)]
LOSS = {"CL": {"patient": 300.0, "sample": 200.0, "reconstruction": None},
        "GL": {"patient": None, "sample": None, "reconstruction": 12.0},
        "HL": {"patient": 140.0, "sample": 170.0, "reconstruction": 18.0}}


def auroc_value(method, cell, mode, task, seed, fraction=1.0, ratio=None):
    """A known value per run: better for HL, deeper cells, fine-tuning, more data."""
    base = 0.6 + 0.05 * (METHODS.index(method) if method in METHODS else -1) + 0.01 * CELLS.index(cell)
    base += 0.2 * (mode in ("finetune", "supervised")) + 0.002 * TASKS.index(task) + 0.001 * seed
    return base - 0.1 * (1 - fraction) - (0.05 if ratio is not None else 0.0)


def _run(method, cell, mode, task, seed, fraction=1.0, ratio=None):
    a = auroc_value(method, cell, mode, task, seed, fraction, ratio)
    return RunRecord(cell=dict(patch=cell[0], depth=cell[1], width=cell[2], method=method), mode=mode,
                     task=task, seed=seed, data_fraction=fraction, case_ratio=ratio,
                     metrics={"auroc": a, "auprc": a - 0.3, "f1": 0.5, "fmax": 0.6},
                     pretrain_loss=LOSS.get(method, {}), ci={"auroc": [a - 0.02, a + 0.02]})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    for seed in range(3):
        for task in TASKS:
            for method in METHODS:
                for cell in CELLS:
                    for mode in ("linear", "finetune"):
                        write_run_json(root, _run(method, cell, mode, task, seed))
                for fraction in (0.1, 0.5):
                    write_run_json(root, _run(method, (125, 4, 512), "finetune", task, seed, fraction))
                for ratio in (0.01, 0.05):
                    write_run_json(root, _run(method, (125, 4, 512), "finetune", task, seed, ratio=ratio))
            write_run_json(root, _run(None, (60, 2, 256), "random_init", task, seed))
            write_run_json(root, _run(None, (125, 2, 256), "supervised", task, seed))
            write_run_json(root, _run(None, (125, 2, 256), "supervised", task, seed, fraction=0.1))
    (root / "config.json").write_text(json.dumps({"lr": 1e-4}))  # another schema: ignored
    return root


@pytest.fixture(scope="module")
def report_paths(workdir, tmp_path_factory):
    return write_report(workdir, tmp_path_factory.mktemp("report"))


def test_schema_round_trip(workdir):
    runs = read_runs(workdir)
    assert len(runs) == 3 * 4 * (3 * (4 * 2 + 2 + 2) + 3)
    run = _run("HL", (60, 2, 256), "linear", "MI", 0)
    path = write_run_json(workdir / "single", run)
    assert read_runs(path.parent) == [run]
    with pytest.raises(ValueError):
        _run("HL", (60, 2, 256), "probe", "MI", 0)


def test_malformed_run_json_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "ecgjax.eval.run/1", "cell": {}, "mode": "linear"}))
    with pytest.raises(ECGInputError, match="bad.json"):
        read_runs(tmp_path)


def _row(text, *starts):
    """The Markdown row whose leading cells are `starts`."""
    prefix = "| " + " | ".join(str(s) for s in starts) + " |"
    rows = [line for line in text.splitlines() if line.startswith(prefix)]
    assert rows, f"no row {prefix}"
    return rows[0]


def _section(text, title):
    start = text.index(title)
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _mean_std(values):
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def test_tables_hold_the_right_numbers(report_paths):
    text = report_paths[0].read_text()

    # Per-cell linear table of HL, case 3 = (125, 4, 512): AUROC MI mean ± std over seeds.
    hl_linear = _section(text, "## Linear probing per cell")
    hl_linear = hl_linear[hl_linear.index("### HL"):]
    mi = [auroc_value("HL", (125, 4, 512), "linear", "MI", s) for s in range(3)]
    criteria = [sum(2 * auroc_value("HL", (125, 4, 512), "linear", t, s) - 0.3 for t in TASKS) for s in range(3)]
    row = _row(hl_linear, 3, 125, 4, 512)
    assert row.split(" | ")[4] == _mean_std(mi)
    assert row.rstrip(" |").endswith(_mean_std(criteria))

    # Best fine-tune table: SL baseline then the best cell per method (the last cell wins here).
    best = _section(text, "## Fine-tuning: best cell per method")
    assert _row(best, "SL", 125, 2, 256)
    sl_mi = [auroc_value(None, (125, 2, 256), "supervised", "MI", s) for s in range(3)]
    assert _row(best, "SL", 125, 2, 256).split(" | ")[4] == _mean_std(sl_mi)
    for method in METHODS:
        assert _row(best, method, 125, 4, 512)
    assert _row(_section(text, "## Linear probing: best cell per method"), "Random Init", 60, 2, 256)

    # Data usage and case ratio tables.
    usage = _section(text, "## Fine-tuning: data usage")
    gl_10 = [auroc_value("GL", (125, 4, 512), "finetune", "CD", s, fraction=0.1) for s in range(3)]
    assert _row(usage, "GL", "10%", 125, 4, 512).split(" | ")[7] == _mean_std(gl_10)
    assert _row(usage, "SL", "10%", 125, 2, 256)
    ratio = _section(text, "## Fine-tuning: case ratio")
    hl_1 = [auroc_value("HL", (125, 4, 512), "finetune", "MI", s, ratio=0.01) for s in range(3)]
    assert _row(ratio, "HL", "1%", 125, 4, 512).split(" | ")[5] == _mean_std(hl_1)

    # Pretraining losses: total is the sum of the present parts; absent parts are N/A.
    losses = _section(text, "## Pretraining loss per cell")
    assert _row(losses[losses.index("### CL"):], 0, 60, 2, 256).endswith("| 500.0000 | 300.0000 | 200.0000 | N/A |")
    assert _row(losses[losses.index("### GL"):], 0, 60, 2, 256).endswith("| 12.0000 | N/A | N/A | 12.0000 |")


def test_figures_exist_and_are_png(report_paths):
    figures = [p for p in report_paths if p.suffix == ".png"]
    assert {p.name for p in figures} == {f"effect_{a}_{m}.png" for a in ("patch", "depth", "width")
                                         for m in ("linear", "finetune")}
    for p in figures:
        assert p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 5000


def test_a_cnn_run_beside_vit_cells_is_tabled_and_left_off_the_grid_figures(tmp_path):
    """A ResNet's cell has no patch and names its encoder as its depth (eval.probe.cell_of)."""
    for seed in range(2):
        write_run_json(tmp_path, _run("HL", (125, 4, 512), "finetune", "MI", seed))
        a = auroc_value("CL", (60, 2, 256), "finetune", "MI", seed)
        write_run_json(tmp_path, RunRecord(cell=dict(patch=None, depth="resnet18", width=16, method="CL"),
                                           mode="finetune", task="MI", seed=seed, metrics={"auroc": a}))
    paths = write_report(tmp_path)
    assert "resnet18" in paths[0].read_text()
    assert {p.name for p in paths[1:]} == {f"effect_{axis}_finetune.png" for axis in ("patch", "depth", "width")}


def test_multilabel_run_is_split_per_task(tmp_path):
    for seed in range(2):
        metrics = {f"{name}/{t}": 0.7 + 0.1 * seed - (0.3 if name == "auprc" else 0.0)
                   for t in TASKS for name in ("auroc", "auprc")}
        metrics.update(macro_auroc=0.7, criteria=99.0)  # criteria is recomputed from the parts
        write_run_json(tmp_path, RunRecord(cell=dict(patch=125, depth=2, width=256, method="HL"), mode="linear",
                                           task="superdiagnostic", task_type="multilabel", seed=seed,
                                           metrics=metrics))
    text = write_report(tmp_path)[0].read_text()
    row = _row(_section(text, "## Linear probing per cell"), 0, 125, 2, 256)
    assert row.split(" | ")[4] == _mean_std([0.7, 0.8])
    assert row.rstrip(" |").endswith(_mean_std([4 * 0.7 + 4 * 0.4, 4 * 0.8 + 4 * 0.5]))


def test_entry_point(tmp_path):
    for seed in range(2):
        write_run_json(tmp_path / "runs", _run("HL", (60, 2, 256), "finetune", "MI", seed))
    out = entry_points.run("experiments/report.py", f"--workdir={tmp_path / 'runs'}", f"--output_dir={tmp_path / 'out'}")
    assert out.returncode == 0, out.stderr
    report = tmp_path / "out" / "report.md"
    assert str(report) in out.stdout
    mi = [auroc_value("HL", (60, 2, 256), "finetune", "MI", s) for s in range(2)]
    assert _mean_std(mi) in report.read_text()


def test_entry_point_tells_a_missing_workdir_from_an_empty_one(tmp_path):
    """Both were 'no run JSON ... found': now which, the closest existing folder, and what writes runs."""
    (tmp_path / "runs").mkdir()
    missing = entry_points.run("experiments/report.py", f"--workdir={tmp_path / 'rnus'}")
    empty = entry_points.run("experiments/report.py", f"--workdir={tmp_path / 'runs'}")
    for result in (missing, empty):
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "experiments/probe.py --workdir=DIR" in result.stderr and "experiments/sweep.py" in result.stderr
    assert f"--workdir={tmp_path / 'rnus'}: no such directory (did you mean {tmp_path / 'runs'}?)" in missing.stderr
    assert f"--workdir={tmp_path / 'runs'}: an empty directory, no run JSON" in empty.stderr
    assert not (tmp_path / "runs" / "report").exists()
