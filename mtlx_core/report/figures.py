"""Static figures of the report (matplotlib, Agg): the verdict grid, Figure 4 with intervals, the Pareto views.

Each function returns a matplotlib ``Figure``; ``save(fig, folder, name)`` writes ``name.png`` and ``name.svg``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from mtlx_core.stats.pareto import COST_AXES, LOG_AXES
from mtlx_core.stats.pareto import pareto_points as pareto_points

logger = logging.getLogger(__name__)

VERDICT_COLORS = {"lower": "#d62728", "higher": "#2ca02c", "equivalent": "#1f77b4", "inconclusive": "#d9d9d9"}
NO_DATA = "#ffffff"
COST_LABELS = COST_AXES


def save(fig: Figure, folder: Path, name: str) -> list[Path]:
    """``folder/name.png`` (150 dpi) and ``folder/name.svg``; closes the figure."""
    out = [folder / f"{name}.png", folder / f"{name}.svg"]
    fig.savefig(out[0], dpi=150, bbox_inches="tight")
    fig.savefig(out[1], bbox_inches="tight")
    plt.close(fig)
    return out


def grid_figure(cells: pd.DataFrame, reference: str) -> Figure:
    """Rows: arm and level; columns: task and metric; colour: the verdict; ``x``: the model's task metric is no
    better than the trivial predictor's; the text: mean delta."""
    c = cells[cells["primary"] & (cells["reference"] == reference)]
    rows = c[["arm_id", "level"]].drop_duplicates().sort_values(["arm_id", "level"]).to_numpy().tolist()
    cols = c[["task", "metric"]].drop_duplicates().sort_values(["task", "metric"]).to_numpy().tolist()
    names = [*VERDICT_COLORS, "no data"]
    code = np.full((len(rows), len(cols)), len(VERDICT_COLORS))
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * len(cols), 1.2 + 0.32 * len(rows)))
    index = {tuple(r): i for i, r in enumerate(rows)}
    cindex = {tuple(k): j for j, k in enumerate(cols)}
    for r in c.itertuples(index=False):
        i, j = index[(r.arm_id, r.level)], cindex[(r.task, r.metric)]
        code[i, j] = names.index(r.verdict)
        mark = "x " if r.no_better_than_trivial else ""
        ax.text(j, i, f"{mark}{r.mean_delta:+.3f}", ha="center", va="center", fontsize=6)
    ax.imshow(code, cmap=ListedColormap([*VERDICT_COLORS.values(), NO_DATA]), vmin=0, vmax=len(names) - 1,
              aspect="auto")
    ax.set_xticks(range(len(cols)), [f"{t}\n{m}" for t, m in cols], fontsize=7, rotation=90)
    ax.set_yticks(range(len(rows)), [f"{a} {lv * 100:.4g}%" for a, lv in rows], fontsize=7)
    ax.set_title(f"Verdict vs {reference} (margin over chance; text: mean delta, x: task metric no better than "
                 "trivial)", fontsize=8)
    ax.legend(handles=[Patch(color=col, label=n) for n, col in [*VERDICT_COLORS.items(), ("no data", NO_DATA)]],
              bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=7)
    return fig


def figure4(f4: pd.DataFrame, tasks: list[str], metrics: list[str]) -> Figure:
    """Mean margin over chance vs achieved sparsity per arm, 95 % bootstrap interval (``query.figure4``'s
    ``margin`` series, one frame with a ``metric`` column): rows metrics, columns tasks."""
    fig, axes = plt.subplots(len(metrics), len(tasks), figsize=(3.2 * len(tasks), 2.3 * len(metrics)),
                             squeeze=False, sharex=True)
    for i, metric in enumerate(metrics):
        for j, task in enumerate(tasks):
            ax = axes[i][j]
            d = f4[(f4["metric"] == metric) & (f4["task"] == task)]
            for arm, g in d.groupby("arm_id", sort=False):
                g = g.sort_values("sparsity")
                x = g["sparsity"].to_numpy() * 100
                ax.plot(x, g["mean"], marker="o", ms=3, lw=1, label=arm)
                ax.fill_between(x, g["ci_low"], g["ci_high"], alpha=0.2)
            ax.axhline(0, color="grey", lw=0.6, ls=":")
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.set_title(task, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{metric}\nmargin", fontsize=8)
            if i == len(metrics) - 1:
                ax.set_xlabel("achieved sparsity (%)", fontsize=8)
    _legend(fig, axes)
    fig.tight_layout()
    return fig


def pareto_figure(points: pd.DataFrame, axis: str, metric: str, tasks: list[str]) -> Figure:
    """Per task: the faithfulness margin (``metric``) and the task metric against the cost ``axis`` (log scale;
    ``level``, the nominal sparsity: linear), one colour per arm; ringed: the Pareto front of (task metric,
    margin, MACs) (``points.front``)."""
    fig, axes = plt.subplots(2, len(tasks), figsize=(3.4 * len(tasks), 5.2), squeeze=False)
    arms = list(dict.fromkeys(points["arm_id"]))
    colors = {a: plt.get_cmap("tab10")(k % 10) for k, a in enumerate(arms)}
    for j, task in enumerate(tasks):
        d = points[points["task"] == task]
        for i, (col, label) in enumerate((("mean_margin", f"{metric} margin"), ("task_value", "task metric"))):
            ax = axes[i][j]
            for arm, g in d.groupby("arm_id", sort=False):
                ax.scatter(g[axis], g[col], s=18, color=colors[arm], label=arm)
                f = g[g["front"]]
                ax.scatter(f[axis], f[col], s=70, facecolors="none", edgecolors="black", linewidths=0.8)
            if axis in LOG_AXES:
                ax.set_xscale("log")
            ax.tick_params(labelsize=7)
            ax.set_xlabel(COST_LABELS.get(axis, axis), fontsize=8)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
            if i == 0:
                ax.set_title(f"{task} (ringed: Pareto front)", fontsize=9)
            if i == 1 and not d.empty:
                better = "higher" if bool(d["higher_is_better"].iloc[0]) else "lower"
                ax.set_ylabel(f"{d['task_metric'].iloc[0]} ({better} is better)", fontsize=8)
    _legend(fig, axes)
    fig.tight_layout()
    return fig


def _legend(fig: Figure, axes: np.ndarray) -> None:
    """One legend for the figure: every label of every axis, once."""
    seen: dict[str, Artist] = {}
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="upper center", ncol=3, fontsize=7,
                   bbox_to_anchor=(0.5, 1.04))
