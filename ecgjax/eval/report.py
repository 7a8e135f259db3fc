"""The evaluation report: every run JSON below a workdir -> report.md and figure PNGs.

Tables (003 App. C): pretraining loss parts per cell and method (Tables 1-3); linear-probe
and fine-tune AUROC / AUPRC / criteria per cell and method (Tables 4-9); best cell per method
against the baselines (main text Tables 4, 5: random init for linear probing, supervised from
scratch for fine-tuning); data usage and case ratio tables on each method's best full-data
cell (main text Tables 6, 7); and every (run group, metric) in one long table, which also
covers multi-class and regression tasks. Values are mean ± sample std (ddof=1) over seeds;
the criteria is summed per seed before averaging. Figures (003 Figs. 3-8): per mode and per
axis (patch, depth, width), one panel per task AUROC, one for the criteria and one for the
pretraining loss, a line per method, averaged over the other two axes and seeds (bars: std).

Run records: ecgjax.eval.runs; frames and summaries: aggregate; tables; figures.
"""
from __future__ import annotations

import pathlib

from ecgjax.cli import closest_path
from ecgjax.errors import UserError
from ecgjax.eval.aggregate import BASELINE_LABEL, BASELINE_OF, loss_frame, methods_of, runs_to_frame, summarise
from ecgjax.eval.figures import AXES, axis_figure
from ecgjax.eval.metrics import CRITERIA_TASKS
from ecgjax.eval.runs import SCHEMA, read_runs
from ecgjax.eval.tables import best_table, cell_table, long_table, loss_table, scarcity_table


# What writes the run JSONs a report reads.
_PRODUCERS = ("runs come from experiments/probe.py --workdir=DIR (one JSON per seed) or experiments/sweep.py "
              "--workdir=DIR (every cell's probes); pass that DIR")


def check_workdir(workdir) -> None:
    """A UserError for a --workdir that does not exist or is not a folder, naming what writes one."""
    path = pathlib.Path(workdir)
    if not path.exists():
        raise UserError(f"--workdir={workdir}: no such directory{closest_path(workdir)}; {_PRODUCERS}")
    if not path.is_dir():
        raise UserError(f"--workdir={workdir}: a file, not a directory; {_PRODUCERS}")


def _what_is_there(path: pathlib.Path) -> str:
    """'an empty directory', 'a pretraining run' or 'N files' for a folder without run JSONs."""
    files = [p for p in path.rglob("*") if p.is_file()]
    if not files:
        return "an empty directory"
    if (path / "config.json").is_file() and (path / "checkpoints").is_dir():
        return ("a pretraining run (probe it first: experiments/probe.py --config.checkpoint="
                f"{path} --workdir={path / 'probe'})")
    return f"{len(files)} files"


def write_report(workdir, output_dir=None) -> list[pathlib.Path]:
    """Read every run below workdir and write report.md plus figure PNGs to output_dir.

    output_dir defaults to workdir/report. Returns the written paths (report.md first).
    """
    check_workdir(workdir)
    runs = read_runs(workdir)
    if not runs:
        raise UserError(f"--workdir={workdir}: {_what_is_there(pathlib.Path(workdir))}, no run JSON (schema "
                        f"{SCHEMA}) below it; {_PRODUCERS}")
    output_dir = pathlib.Path(output_dir) if output_dir is not None else pathlib.Path(workdir) / "report"
    output_dir.mkdir(parents=True, exist_ok=True)
    frame = runs_to_frame(runs)
    summary = summarise(frame)
    losses = loss_frame(runs)

    sections = [f"# Evaluation report\n\n{len(runs)} runs from `{workdir}`. "
                "Values: mean ± sample std over seeds; Criteria = Σ AUROC + Σ AUPRC over "
                f"{', '.join(CRITERIA_TASKS)} (003)."]
    if not losses.empty:
        sections.append("## Pretraining loss per cell (003 App. C Tables 1-3)")
        sections += [f"### {m}\n\n{loss_table(losses, m)}" for m in sorted(set(losses.method))]
    for mode, name in (("linear", "Linear probing"), ("finetune", "Fine-tuning")):
        methods = methods_of(summary, mode)
        if methods:
            sections.append(f"## {name} per cell (003 App. C Tables {'4-6' if mode == 'linear' else '7-9'})")
            sections += [f"### {m}\n\n{cell_table(summary, mode, m)}" for m in methods]
        if methods or methods_of(summary, BASELINE_OF[mode]):
            sections.append(f"## {name}: best cell per method vs "
                            f"{BASELINE_LABEL[BASELINE_OF[mode]]} (003 Table {4 if mode == 'linear' else 5})"
                            f"\n\n{best_table(summary, mode)}")
        for axis, label, number in (("data_fraction", "data usage", 6), ("case_ratio", "case ratio", 7)):
            table = scarcity_table(summary, mode, axis)
            if table is not None:
                sections.append(f"## {name}: {label} (003 Table {number})\n\n{table}")
    sections.append(f"## All results\n\n{long_table(summary)}")

    figures = []
    for mode in ("linear", "finetune"):
        for axis in AXES:
            written = axis_figure(frame, losses, mode, axis, output_dir / f"effect_{axis}_{mode}.png")
            if written is not None:
                figures.append(written)
    if figures:
        sections.append("## Figures (003 Figs. 3-8)\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in figures))

    report = output_dir / "report.md"
    report.write_text("\n\n".join(sections) + "\n")
    return [report, *figures]
