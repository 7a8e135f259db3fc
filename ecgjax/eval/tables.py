"""Markdown tables of the evaluation report (003 App. C Tables 1-9 and main text Tables 4-7).

Values are mean ± sample std over seeds (aggregate.summarise); each method's cell is its best by
criteria (aggregate.best_cell).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from ecgjax import markdown
from ecgjax.eval.aggregate import (BASELINE_LABEL, BASELINE_OF, GROUP, best_cell, cells, cells_of, methods_of,
                                   ranking_score, score_tasks)
from ecgjax.eval.runs import LOSS_PARTS


def format_value(mean: float, std: float, n: int) -> str:
    """'0.8318 ± 0.0123' over several seeds, '0.8318' for one, '–' when missing."""
    if mean is None or not math.isfinite(mean):
        return "–"
    if n > 1 and std is not None and math.isfinite(std):
        return f"{mean:.4f} ± {std:.4f}"
    return f"{mean:.4f}"


def _score_columns(tasks: Sequence[str]) -> list[tuple[str, str]]:
    return ([("auroc", t) for t in tasks] + [("auprc", t) for t in tasks] + [("criteria", "")])


def _score_header(tasks: Sequence[str]) -> list[str]:
    return [f"AUROC {t}" for t in tasks] + [f"AUPRC {t}" for t in tasks] + ["Criteria"]


def _score_cells(rows: pd.DataFrame, columns: Sequence[tuple[str, str]]) -> list[str]:
    lookup = {(r.metric, r.task): (r.mean, r.std, r.n) for r in rows.itertuples()}
    return [format_value(*lookup.get(col, (np.nan, np.nan, 0))) for col in columns]


def cell_table(summary: pd.DataFrame, mode: str, method: str) -> str:
    """003 App. C Tables 4-9: every cell of one method, full data, natural prevalence."""
    rows = cells_of(summary, dict(method=method, mode=mode, data_fraction=1.0, case_ratio=None))
    tasks = score_tasks(rows)
    columns = _score_columns(tasks)
    body = [[i, p, d, w, *_score_cells(cells_of(rows, dict(patch=p, depth=d, width=w)), columns)]
            for i, (p, d, w) in enumerate(cells(rows))]
    return markdown.table(["Case", "Patch", "Depth", "Width", *_score_header(tasks)], body)


def best_table(summary: pd.DataFrame, mode: str) -> str:
    """003 Tables 4 / 5: the baseline's and each method's best cell (by criteria)."""
    baseline = BASELINE_LABEL[BASELINE_OF[mode]]
    entries = [(baseline, BASELINE_OF[mode])] + [(m, mode) for m in methods_of(summary, mode)]
    full = cells_of(summary, dict(data_fraction=1.0, case_ratio=None))
    tasks = score_tasks(full[full["mode"].isin([mode, BASELINE_OF[mode]])])
    columns = _score_columns(tasks)
    body = []
    for method, run_mode in entries:
        cell = best_cell(summary, method, run_mode)
        if cell is None:
            continue
        rows = cells_of(full, dict(method=method, mode=run_mode, patch=cell[0], depth=cell[1], width=cell[2]))
        body.append([method, *cell, *_score_cells(rows, columns)])
    return markdown.table(["Method", "Patch", "Depth", "Width", *_score_header(tasks)], body)


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
    tasks = score_tasks(pool)
    columns = _score_columns(tasks)
    entries = [(BASELINE_LABEL[baseline_mode], baseline_mode)] + [(m, mode) for m in methods_of(pool, mode)]
    body = []
    for method, run_mode in entries:
        levels = sorted(set(pool.loc[(pool.method == method) & (pool["mode"] == run_mode), axis]), reverse=True)
        for level in levels:
            at_level = pool[(pool.method == method) & (pool["mode"] == run_mode) & (pool[axis] == level)]
            cell = best_cell(summary, method, run_mode)
            if cell is None or cells_of(at_level, dict(patch=cell[0], depth=cell[1], width=cell[2])).empty:
                cell = max((ranking_score(cells_of(at_level, dict(patch=p, depth=d, width=w))), (p, d, w))
                           for p, d, w in cells(at_level))[1]
            rows = cells_of(at_level, dict(patch=cell[0], depth=cell[1], width=cell[2]))
            body.append([method, f"{level * 100:g}%", *cell, *_score_cells(rows, columns)])
    title = "Data usage" if axis == "data_fraction" else "Case ratio"
    return markdown.table(["Method", title, "Patch", "Depth", "Width", *_score_header(tasks)], body)


def loss_table(losses: pd.DataFrame, method: str) -> str:
    """003 App. C Tables 1-3: total and part losses per cell (mean ± std over distinct encoders)."""
    rows = losses[losses.method == method]
    body = []
    for i, (p, d, w) in enumerate(cells(rows)):
        cell = rows[(rows.patch == p) & (rows.depth == d) & (rows.width == w)]
        body.append([i, p, d, w, *[format_value(cell[c].mean(), cell[c].std(ddof=1), int(cell[c].count()))
                                   if cell[c].notna().any() else "N/A" for c in ("total", *LOSS_PARTS)]])
    return markdown.table(["Case", "Patch", "Depth", "Width", "Total loss", "Patient loss", "Sample loss",
                      "Reconstruction loss"], body)


def long_table(summary: pd.DataFrame) -> str:
    """Every (group, task, metric) as mean ± std (n seeds)."""
    ordered = summary.sort_values([*GROUP, "task", "metric"], key=lambda s: s.map(str))
    body = [[r.method, r.patch, r.depth, r.width, r.mode, f"{r.data_fraction:g}",
             "natural" if not math.isfinite(r.case_ratio) else f"{r.case_ratio:g}",
             r.task or "–", r.metric, format_value(r.mean, r.std, r.n), r.n]
            for r in ordered.itertuples()]
    return markdown.table(["Method", "Patch", "Depth", "Width", "Mode", "Data fraction", "Case ratio",
                      "Task", "Metric", "Value", "Seeds"], body)
