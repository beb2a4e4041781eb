"""Pareto front of models on several objectives (D27: task metric, faithfulness margin, MACs), and the points of
the cost views (faithfulness and task metric against parameters, MACs, latency and nominal sparsity)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: the x axes of the cost views, with their labels (a store column, or ``level``: the nominal target sparsity)
COST_AXES: dict[str, str] = {"params": "parameters", "macs": "MACs",
                             "latency_cpu_ms": "CPU latency (ms, batch 1, 1 thread)",
                             "latency_gpu_ms": "GPU latency (ms, batch 1)", "level": "nominal sparsity"}
#: axes drawn on a log scale
LOG_AXES = frozenset({"params", "macs", "latency_cpu_ms", "latency_gpu_ms"})


def pareto_front(points: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``points`` ``(n, k)``: no other row is at least as good on every
    objective and strictly better on one (``maximize[j]``: higher is better on objective ``j``). Rows with a
    missing value are never on the front."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(maximize):
        raise ValueError(f"pareto_front: points of shape {p.shape} do not match {len(maximize)} objectives")
    signs = np.where(np.asarray(maximize, dtype=bool), 1.0, -1.0)
    q = p * signs  # every objective: higher is better
    ok = np.all(np.isfinite(q), axis=1)
    front = np.zeros(len(q), dtype=bool)
    for i in np.flatnonzero(ok):
        others = q[ok]
        dominated = np.any(np.all(others >= q[i], axis=1) & np.any(others > q[i], axis=1))
        front[i] = not dominated
    return front


def pareto_points(models: pd.DataFrame, margins: pd.DataFrame, metric: str, front_cost: str = "macs") -> pd.DataFrame:
    """One row per (model, task) of ``models`` (roles, costs and the primary task metric: ``value``,
    ``higher_is_better``, per model and task) with its mean margin under ``metric`` (``margins``: ``model_id, task,
    metric, mean_margin``) and ``front``: on the Pareto front of (task metric, margin, ``front_cost``) among the
    task's models. ``value`` is renamed ``task_value``."""
    m = margins[margins["metric"] == metric].merge(models, on=["model_id", "task"], how="inner")
    m = m[m["arm_id"].notna()].copy()
    m["front"] = False
    for _, g in m.groupby("task"):
        pts = g[["value", "mean_margin", front_cost]].to_numpy(np.float64)
        hib = bool(g["higher_is_better"].iloc[0]) if g["higher_is_better"].notna().any() else True
        m.loc[g.index, "front"] = pareto_front(pts, [hib, True, False])
    return m.rename(columns={"value": "task_value"}).reset_index(drop=True)
