"""Run records -> long frames and seed summaries, and the choice of each method's best cell.

A long frame has one row per (run, task, metric): method, patch, depth, width, mode, data_fraction,
case_ratio (NaN = natural), seed, task, metric, value; 003's criteria (sum of AUROC and AUPRC over
MI, STTC, CD, HYP) is added per seed. A summary has mean, sample std (ddof=1) and count over seeds.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from ecgjax.eval.metrics import CRITERIA_TASKS
from ecgjax.eval.runs import LOSS_PARTS, RunRecord

BASELINE_LABEL = {"random_init": "Random Init", "supervised": "SL"}
# Which baseline each pretrained mode is compared against (003 Tables 4 and 5).
BASELINE_OF = {"linear": "random_init", "finetune": "supervised"}
# The keys that identify one group of runs differing only in seed.
GROUP = ["method", "patch", "depth", "width", "mode", "data_fraction", "case_ratio"]


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
    frame = pd.DataFrame(rows, columns=[*GROUP, "seed", "task", "metric", "value"])
    return pd.concat([frame, _criteria_rows(frame)], ignore_index=True)


def _criteria_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """003's criteria per (group, seed): sum of AUROC and AUPRC over MI, STTC, CD, HYP."""
    parts = frame[frame.task.isin(CRITERIA_TASKS) & frame.metric.isin(["auroc", "auprc"])]
    if parts.empty:
        return frame.iloc[:0]
    keys = [*GROUP, "seed"]
    grouped = parts.groupby(keys, dropna=False)
    complete = grouped.value.count() == 2 * len(CRITERIA_TASKS)
    total = grouped.value.sum(min_count=1).where(complete)
    out = total.rename("value").reset_index()
    out["task"], out["metric"] = "", "criteria"
    return out[frame.columns]


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and count over seeds for every (group, task, metric)."""
    stats = frame.groupby([*GROUP, "task", "metric"], dropna=False).value.agg(
        mean="mean", std=lambda v: v.std(ddof=1), n="count")
    return stats.reset_index()


def score_tasks(summary: pd.DataFrame) -> list[str]:
    """Tasks with an AUROC, the criteria tasks first in 003's order."""
    present = set(summary.loc[summary.metric == "auroc", "task"])
    return [t for t in CRITERIA_TASKS if t in present] + sorted(present - set(CRITERIA_TASKS))


def cells_of(summary: pd.DataFrame, group: dict) -> pd.DataFrame:
    """Rows of `summary` matching `group` (case_ratio None matches the natural prevalence)."""
    mask = np.ones(len(summary), dtype=bool)
    for key, value in group.items():
        if key == "case_ratio" and value is None:
            mask &= summary.case_ratio.isna().to_numpy()
        else:
            mask &= (summary[key] == value).to_numpy()
    return summary[mask]


def ranking_score(rows: pd.DataFrame) -> float:
    """Criteria mean, or the mean AUROC over tasks when the criteria is incomplete."""
    crit = rows[(rows.metric == "criteria")]["mean"]
    if len(crit) and math.isfinite(crit.iloc[0]):
        return float(crit.iloc[0])
    auroc = rows[rows.metric == "auroc"]["mean"].dropna()
    return float(auroc.mean()) if len(auroc) else -math.inf


def cells(rows: pd.DataFrame) -> list[tuple]:
    return sorted({(r.patch, r.depth, r.width) for r in rows.itertuples()}, key=lambda c: tuple(map(_num, c)))


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.inf


def best_cell(summary: pd.DataFrame, method: str, mode: str, data_fraction: float = 1.0,
              case_ratio: float | None = None) -> tuple | None:
    """(patch, depth, width) with the highest mean criteria for one method and mode."""
    rows = cells_of(summary, dict(method=method, mode=mode, data_fraction=data_fraction,
                                   case_ratio=case_ratio))
    scored = [(ranking_score(cells_of(rows, dict(patch=p, depth=d, width=w))), (p, d, w))
              for p, d, w in cells(rows)]
    return max(scored)[1] if scored else None


def methods_of(summary: pd.DataFrame, mode: str) -> list[str]:
    return sorted(set(summary.loc[summary["mode"] == mode, "method"]))


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
