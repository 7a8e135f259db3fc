"""Figures of the evaluation report (003 Figs. 3-8): metric against one architecture axis.

Drawn on matplotlib Figure objects (Agg rendering when saved), so importing this module neither
picks a backend nor needs a display.
"""
from __future__ import annotations

import pathlib

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ecgjax.eval.aggregate import score_tasks

AXES: tuple[str, ...] = ("patch", "depth", "width")


def axis_figure(frame: pd.DataFrame, losses: pd.DataFrame, mode: str, axis: str, path) -> pathlib.Path | None:
    """003 Figs. 3-8: metric against one architecture axis, a line per method.

    Panels: AUROC of each task, criteria, total pretraining loss (log scale). Each point
    averages seeds and the other two axes; bars are the std of those values.
    """
    data = frame[(frame["mode"] == mode) & (frame.data_fraction == 1.0) & frame.case_ratio.isna()]
    # Points on the ViT grid only: a CNN's cell names its encoder ('resnet18') where a depth would be.
    data = data[data[list(AXES)].apply(pd.to_numeric, errors="coerce").notna().all(axis=1)]
    if data.empty:
        return None
    panels = [("auroc", t, f"AUROC {t}") for t in score_tasks(data)]
    if data.loc[data.metric == "criteria", "value"].notna().any():
        panels.append(("criteria", "", "Criteria"))
    methods = sorted(set(data.method))
    loss_rows = losses[losses.method.isin(methods)]
    if loss_rows.total.notna().any():
        panels.append(("loss", "", "FM loss"))
    colours = {m: matplotlib.colormaps["tab10"](i % 10) for i, m in enumerate(methods)}  # same in every panel
    fig = Figure(figsize=(3.2 * len(panels), 3.0))
    axes = fig.subplots(1, len(panels), squeeze=False)
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
    return path
