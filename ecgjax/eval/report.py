"""Run results on disk (one JSON per run) -> Markdown tables and figures shaped like 003 App. C.

Run JSON schema ("ecgjax.eval.run/1"), written by `write_run_json`, read by `read_runs`::

    {
      "schema": "ecgjax.eval.run/1",
      "cell": {"patch": 125, "depth": 4, "width": 512, "method": "HL"},
                                  # encoder cell; method CL|GL|HL|... (null for baselines)
      "mode": "linear",           # linear | finetune | random_init (linear probe on a randomly
                                  # initialised encoder) | supervised (trained end to end from scratch)
      "task": "MI",               # one downstream task; a multilabel run may name a task group
      "task_type": "binary",      # binary | multiclass | multilabel | regression
      "data_fraction": 1.0,       # share of labelled training patients (protocols.subsample_patients)
      "case_ratio": null,         # target prevalence (protocols.case_ratio_subsample); null = natural
      "seed": 0,                  # downstream seed (data subsample + head init + order)
      "pretrain_loss": {"patient": 135.0, "sample": 169.3, "reconstruction": 16.9},
                                  # final pretraining loss parts of the encoder; null when absent
      "metrics": {"auroc": 0.83, "auprc": 0.61, "f1": 0.55, "fmax": 0.60},
                                  # metrics.compute_metrics output; multilabel runs use
                                  # "auroc/MI", "auprc/MI", ... and are split into per-task rows
      "ci": {"auroc": [0.80, 0.86]},   # optional 95% bootstrap interval per metric
      "extra": {}                 # optional free-form (checkpoint path, step, wall time, ...)
    }

`read_runs(workdir)` walks every *.json below workdir and keeps those with this schema.

Tables (003 App. C): pretraining loss parts per cell and method (Tables 1-3); linear-probe
and fine-tune AUROC / AUPRC / criteria per cell and method (Tables 4-9); best cell per method
against the baselines (main text Tables 4, 5: random init for linear probing, supervised from
scratch for fine-tuning); data usage and case ratio tables on each method's best full-data
cell (main text Tables 6, 7); and every (run group, metric) in one long table, which also
covers multi-class and regression tasks. Values are mean ± sample std (ddof=1) over seeds;
the criteria is summed per seed before averaging. Figures (003 Figs. 3-8): per mode and per
axis (patch, depth, width), one panel per task AUROC, one for the criteria and one for the
pretraining loss, a line per method, averaged over the other two axes and seeds (bars: std).
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ecgjax.data.errors import ECGInputError  # noqa: E402
from ecgjax.eval.metrics import CRITERIA_TASKS  # noqa: E402

SCHEMA = "ecgjax.eval.run/1"
MODES: tuple[str, ...] = ("linear", "finetune", "random_init", "supervised")
LOSS_PARTS: tuple[str, ...] = ("patient", "sample", "reconstruction")
CELL_KEYS: tuple[str, ...] = ("patch", "depth", "width", "method")
BASELINE_LABEL = {"random_init": "Random Init", "supervised": "SL"}
# Which baseline each pretrained mode is compared against (003 Tables 4 and 5).
BASELINE_OF = {"linear": "random_init", "finetune": "supervised"}
AXES: tuple[str, ...] = ("patch", "depth", "width")
# The keys that identify one group of runs differing only in seed.
_GROUP = ["method", "patch", "depth", "width", "mode", "data_fraction", "case_ratio"]


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One downstream run: which encoder, how it was trained, on what, and how it scored."""

    cell: dict
    mode: str
    task: str
    seed: int
    metrics: dict
    task_type: str = "binary"
    data_fraction: float = 1.0
    case_ratio: float | None = None
    pretrain_loss: dict = dataclasses.field(default_factory=dict)
    ci: dict = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        missing = [k for k in CELL_KEYS if k not in self.cell]
        if missing:
            raise ValueError(f"cell lacks {missing}")
        if not 0.0 < float(self.data_fraction) <= 1.0:
            raise ValueError(f"data_fraction must be in (0, 1], got {self.data_fraction}")

    def to_json(self) -> dict:
        return {"schema": SCHEMA, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: dict) -> "RunRecord":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def run_filename(run: RunRecord) -> str:
    """A path, relative to the workdir, unique per (cell, mode, task, fraction, ratio, seed)."""
    c = run.cell
    ratio = "natural" if run.case_ratio is None else f"{run.case_ratio:g}"
    return (f"eval/{run.mode}/{c['method'] or 'none'}_p{c['patch']}_d{c['depth']}_w{c['width']}/"
            f"{run.task}_frac{run.data_fraction:g}_ratio{ratio}_seed{run.seed}.json")


def write_run_json(workdir, run: RunRecord) -> pathlib.Path:
    """Write one run as JSON under workdir (see `run_filename`); returns the path."""
    path = pathlib.Path(workdir) / run_filename(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run.to_json(), indent=2, sort_keys=True, allow_nan=True))
    return path


def read_runs(workdir) -> list[RunRecord]:
    """Every run JSON below workdir (files of other schemas are skipped).

    A file claiming this schema but unreadable raises ECGInputError naming it.
    """
    runs = []
    for path in sorted(pathlib.Path(workdir).rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            if SCHEMA in path.read_text(errors="ignore"):
                raise ECGInputError(path, f"run JSON does not parse: {err}") from err
            continue
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            continue
        try:
            runs.append(RunRecord.from_json(data))
        except (TypeError, ValueError) as err:
            raise ECGInputError(path, f"malformed run record: {err}") from err
    return runs


# --------------------------------------------------------------------------- long frames

def method_label(run: RunRecord) -> str:
    """Row label: the SSL method for pretrained modes, the baseline name otherwise."""
    return BASELINE_LABEL.get(run.mode) or str(run.cell["method"])


def runs_to_frame(runs: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per (run, task, metric) with the run's keys; criteria added per seed.

    Columns: method, patch, depth, width, mode, data_fraction, case_ratio (NaN = natural),
    seed, task, metric, value. Multilabel metrics "name/TASK" become task TASK, metric name.
    """
    rows = []
    for run in runs:
        key = dict(method=method_label(run), patch=run.cell["patch"], depth=run.cell["depth"],
                   width=run.cell["width"], mode=run.mode, data_fraction=float(run.data_fraction),
                   case_ratio=np.nan if run.case_ratio is None else float(run.case_ratio),
                   seed=int(run.seed))
        for name, value in run.metrics.items():
            metric, _, task = name.partition("/")
            if metric == "criteria":  # recomputed below from the per-task values
                continue
            rows.append({**key, "task": task or run.task, "metric": metric,
                         "value": np.nan if value is None else float(value)})
    frame = pd.DataFrame(rows, columns=[*_GROUP, "seed", "task", "metric", "value"])
    return pd.concat([frame, _criteria_rows(frame)], ignore_index=True)


def _criteria_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """003's criteria per (group, seed): sum of AUROC and AUPRC over MI, STTC, CD, HYP."""
    parts = frame[frame.task.isin(CRITERIA_TASKS) & frame.metric.isin(["auroc", "auprc"])]
    if parts.empty:
        return frame.iloc[:0]
    keys = [*_GROUP, "seed"]
    grouped = parts.groupby(keys, dropna=False)
    complete = grouped.value.count() == 2 * len(CRITERIA_TASKS)
    total = grouped.value.sum(min_count=1).where(complete)
    out = total.rename("value").reset_index()
    out["task"], out["metric"] = "", "criteria"
    return out[frame.columns]


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and count over seeds for every (group, task, metric)."""
    stats = frame.groupby([*_GROUP, "task", "metric"], dropna=False).value.agg(
        mean="mean", std=lambda v: v.std(ddof=1), n="count")
    return stats.reset_index()


def format_value(mean: float, std: float, n: int) -> str:
    """'0.8318 ± 0.0123' over several seeds, '0.8318' for one, '–' when missing."""
    if mean is None or not math.isfinite(mean):
        return "–"
    if n > 1 and std is not None and math.isfinite(std):
        return f"{mean:.4f} ± {std:.4f}"
    return f"{mean:.4f}"


# ------------------------------------------------------------------------------- tables

def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _tasks(summary: pd.DataFrame) -> list[str]:
    """Tasks with an AUROC, the criteria tasks first in 003's order."""
    present = set(summary.loc[summary.metric == "auroc", "task"])
    return [t for t in CRITERIA_TASKS if t in present] + sorted(present - set(CRITERIA_TASKS))


def _score_columns(tasks: Sequence[str]) -> list[tuple[str, str]]:
    return ([("auroc", t) for t in tasks] + [("auprc", t) for t in tasks] + [("criteria", "")])


def _score_header(tasks: Sequence[str]) -> list[str]:
    return [f"AUROC {t}" for t in tasks] + [f"AUPRC {t}" for t in tasks] + ["Criteria"]


def _cells_of(summary: pd.DataFrame, group: dict) -> pd.DataFrame:
    """Rows of `summary` matching `group` (case_ratio None matches the natural prevalence)."""
    mask = np.ones(len(summary), dtype=bool)
    for key, value in group.items():
        if key == "case_ratio" and value is None:
            mask &= summary.case_ratio.isna().to_numpy()
        else:
            mask &= (summary[key] == value).to_numpy()
    return summary[mask]


def _score_cells(rows: pd.DataFrame, columns: Sequence[tuple[str, str]]) -> list[str]:
    lookup = {(r.metric, r.task): (r.mean, r.std, r.n) for r in rows.itertuples()}
    return [format_value(*lookup.get(col, (np.nan, np.nan, 0))) for col in columns]


def _ranking_score(rows: pd.DataFrame) -> float:
    """Criteria mean, or the mean AUROC over tasks when the criteria is incomplete."""
    crit = rows[(rows.metric == "criteria")]["mean"]
    if len(crit) and math.isfinite(crit.iloc[0]):
        return float(crit.iloc[0])
    auroc = rows[rows.metric == "auroc"]["mean"].dropna()
    return float(auroc.mean()) if len(auroc) else -math.inf


def _cells(rows: pd.DataFrame) -> list[tuple]:
    return sorted({(r.patch, r.depth, r.width) for r in rows.itertuples()}, key=lambda c: tuple(map(_num, c)))


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.inf


def best_cell(summary: pd.DataFrame, method: str, mode: str, data_fraction: float = 1.0,
              case_ratio: float | None = None) -> tuple | None:
    """(patch, depth, width) with the highest mean criteria for one method and mode."""
    rows = _cells_of(summary, dict(method=method, mode=mode, data_fraction=data_fraction,
                                   case_ratio=case_ratio))
    scored = [(_ranking_score(_cells_of(rows, dict(patch=p, depth=d, width=w))), (p, d, w))
              for p, d, w in _cells(rows)]
    return max(scored)[1] if scored else None


def _methods(summary: pd.DataFrame, mode: str) -> list[str]:
    return sorted(set(summary.loc[summary["mode"] == mode, "method"]))


def cell_table(summary: pd.DataFrame, mode: str, method: str) -> str:
    """003 App. C Tables 4-9: every cell of one method, full data, natural prevalence."""
    rows = _cells_of(summary, dict(method=method, mode=mode, data_fraction=1.0, case_ratio=None))
    tasks = _tasks(rows)
    columns = _score_columns(tasks)
    body = [[i, p, d, w, *_score_cells(_cells_of(rows, dict(patch=p, depth=d, width=w)), columns)]
            for i, (p, d, w) in enumerate(_cells(rows))]
    return _markdown(["Case", "Patch", "Depth", "Width", *_score_header(tasks)], body)


def best_table(summary: pd.DataFrame, mode: str) -> str:
    """003 Tables 4 / 5: the baseline's and each method's best cell (by criteria)."""
    baseline = BASELINE_LABEL[BASELINE_OF[mode]]
    entries = [(baseline, BASELINE_OF[mode])] + [(m, mode) for m in _methods(summary, mode)]
    full = _cells_of(summary, dict(data_fraction=1.0, case_ratio=None))
    tasks = _tasks(full[full["mode"].isin([mode, BASELINE_OF[mode]])])
    columns = _score_columns(tasks)
    body = []
    for method, run_mode in entries:
        cell = best_cell(summary, method, run_mode)
        if cell is None:
            continue
        rows = _cells_of(full, dict(method=method, mode=run_mode, patch=cell[0], depth=cell[1], width=cell[2]))
        body.append([method, *cell, *_score_cells(rows, columns)])
    return _markdown(["Method", "Patch", "Depth", "Width", *_score_header(tasks)], body)


def scarcity_table(summary: pd.DataFrame, mode: str, axis: str) -> str | None:
    """003 Tables 6 (axis='data_fraction') / 7 (axis='case_ratio'), on each method's best cell.

    Rows: baseline then methods, each at every reduced fraction / set case ratio present
    (descending). The cell is the method's best at full data, else its best at that level.
    """
    baseline_mode = BASELINE_OF[mode]
    pool = summary[summary["mode"].isin([mode, baseline_mode])]
    if axis == "data_fraction":
        pool = pool[(pool.data_fraction < 1.0) & pool.case_ratio.isna()]
    else:
        pool = pool[pool.case_ratio.notna() & (pool.data_fraction == 1.0)]
    if pool.empty:
        return None
    tasks = _tasks(pool)
    columns = _score_columns(tasks)
    entries = [(BASELINE_LABEL[baseline_mode], baseline_mode)] + [(m, mode) for m in _methods(pool, mode)]
    body = []
    for method, run_mode in entries:
        levels = sorted(set(pool.loc[(pool.method == method) & (pool["mode"] == run_mode), axis]), reverse=True)
        for level in levels:
            at_level = pool[(pool.method == method) & (pool["mode"] == run_mode) & (pool[axis] == level)]
            cell = best_cell(summary, method, run_mode)
            if cell is None or _cells_of(at_level, dict(patch=cell[0], depth=cell[1], width=cell[2])).empty:
                cell = max((_ranking_score(_cells_of(at_level, dict(patch=p, depth=d, width=w))), (p, d, w))
                           for p, d, w in _cells(at_level))[1]
            rows = _cells_of(at_level, dict(patch=cell[0], depth=cell[1], width=cell[2]))
            body.append([method, f"{level * 100:g}%", *cell, *_score_cells(rows, columns)])
    title = "Data usage" if axis == "data_fraction" else "Case ratio"
    return _markdown(["Method", title, "Patch", "Depth", "Width", *_score_header(tasks)], body)


def loss_frame(runs: Iterable[RunRecord]) -> pd.DataFrame:
    """Distinct pretraining-loss records per cell: method, patch, depth, width, parts, total."""
    rows = set()
    for run in runs:
        if run.mode not in ("linear", "finetune") or not run.pretrain_loss:
            continue
        parts = tuple(_float_or_nan(run.pretrain_loss.get(p)) for p in LOSS_PARTS)
        rows.add((str(run.cell["method"]), run.cell["patch"], run.cell["depth"], run.cell["width"], parts))
    frame = pd.DataFrame([(m, p, d, w, *parts) for m, p, d, w, parts in rows],
                         columns=["method", "patch", "depth", "width", *LOSS_PARTS])
    frame["total"] = frame[list(LOSS_PARTS)].sum(axis=1, min_count=1)
    return frame


def _float_or_nan(value) -> float:
    return np.nan if value is None else float(value)


def loss_table(losses: pd.DataFrame, method: str) -> str:
    """003 App. C Tables 1-3: total and part losses per cell (mean ± std over distinct encoders)."""
    rows = losses[losses.method == method]
    body = []
    for i, (p, d, w) in enumerate(_cells(rows)):
        cell = rows[(rows.patch == p) & (rows.depth == d) & (rows.width == w)]
        body.append([i, p, d, w, *[format_value(cell[c].mean(), cell[c].std(ddof=1), int(cell[c].count()))
                                   if cell[c].notna().any() else "N/A" for c in ("total", *LOSS_PARTS)]])
    return _markdown(["Case", "Patch", "Depth", "Width", "Total loss", "Patient loss", "Sample loss",
                      "Reconstruction loss"], body)


def long_table(summary: pd.DataFrame) -> str:
    """Every (group, task, metric) as mean ± std (n seeds)."""
    ordered = summary.sort_values([*_GROUP, "task", "metric"], key=lambda s: s.map(str))
    body = [[r.method, r.patch, r.depth, r.width, r.mode, f"{r.data_fraction:g}",
             "natural" if not math.isfinite(r.case_ratio) else f"{r.case_ratio:g}",
             r.task or "–", r.metric, format_value(r.mean, r.std, r.n), r.n]
            for r in ordered.itertuples()]
    return _markdown(["Method", "Patch", "Depth", "Width", "Mode", "Data fraction", "Case ratio",
                      "Task", "Metric", "Value", "Seeds"], body)


# ------------------------------------------------------------------------------ figures

def axis_figure(frame: pd.DataFrame, losses: pd.DataFrame, mode: str, axis: str, path) -> pathlib.Path | None:
    """003 Figs. 3-8: metric against one architecture axis, a line per method.

    Panels: AUROC of each task, criteria, total pretraining loss (log scale). Each point
    averages seeds and the other two axes; bars are the std of those values.
    """
    data = frame[(frame["mode"] == mode) & (frame.data_fraction == 1.0) & frame.case_ratio.isna()]
    if data.empty:
        return None
    panels = [("auroc", t, f"AUROC {t}") for t in _tasks(data)]
    if data.loc[data.metric == "criteria", "value"].notna().any():
        panels.append(("criteria", "", "Criteria"))
    methods = sorted(set(data.method))
    loss_rows = losses[losses.method.isin(methods)]
    if loss_rows.total.notna().any():
        panels.append(("loss", "", "FM loss"))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}  # same colour in every panel
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False)
    for ax, (metric, task, title) in zip(axes[0], panels):
        ax.set_xticks(sorted({float(v) for v in data[axis].dropna()}))
        for method in methods:
            if metric == "loss":
                values = loss_rows[loss_rows.method == method].rename(columns={"total": "value"})
            else:
                values = data[(data.method == method) & (data.metric == metric) & (data.task == task)]
            stats = values.groupby(axis).value.agg(["mean", "std"]).dropna(subset=["mean"])
            if stats.empty:
                continue
            x = np.array(stats.index, dtype=float)
            ax.errorbar(x, stats["mean"], yerr=stats["std"].fillna(0.0), marker="o", capsize=3,
                        color=colours[method], label=method)
        ax.set_xlabel(axis)
        ax.set_title(title, fontsize=9)
        if metric == "loss":
            ax.set_yscale("log")
    labelled = next((ax for ax in np.ravel(axes) if ax.get_legend_handles_labels()[0]), None)
    if labelled is not None:  # one legend, on the first panel that has lines
        labelled.legend(fontsize=7)
    fig.suptitle(f"Effect of {axis} ({'linear probing' if mode == 'linear' else 'fine-tuning'})", fontsize=10)
    # Fixed margins: tight_layout re-draws every panel and dominates the report's run time.
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.18, top=0.82, wspace=0.4)
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------- report

def write_report(workdir, output_dir=None) -> list[pathlib.Path]:
    """Read every run below workdir and write report.md plus figure PNGs to output_dir.

    output_dir defaults to workdir/report. Returns the written paths (report.md first).
    """
    runs = read_runs(workdir)
    if not runs:
        raise ECGInputError(workdir, f"no run JSON with schema {SCHEMA} found")
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
        methods = _methods(summary, mode)
        if methods:
            sections.append(f"## {name} per cell (003 App. C Tables {'4-6' if mode == 'linear' else '7-9'})")
            sections += [f"### {m}\n\n{cell_table(summary, mode, m)}" for m in methods]
        if methods or _methods(summary, BASELINE_OF[mode]):
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
