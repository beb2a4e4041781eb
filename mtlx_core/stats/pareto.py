"""Pareto front of models on several objectives (D27: task metric, faithfulness margin, MACs)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
