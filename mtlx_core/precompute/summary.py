"""The study's summary per arm, task and sparsity: task metric, Grad-CAM's IROF AOC and its baselines.

``summarize(con, fill_mode)`` reads a store (work file or snapshot) and returns one dict per (arm, model, task):
the task's primary metric, the mean normalised AOC of Grad-CAM with a 95 % percentile bootstrap interval
(images resampled with replacement, all targets of a drawn image kept: targets of one image are not
independent), the mean normalised AOC of the random and reversed baselines on the same explanations, and the
share of explanations where Grad-CAM's AOC beats each baseline (higher AOC = faster drop = more faithful).
Only curves with status ``ok`` / ``single_segment`` count.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np

from mtlx_core.tasks import DepthTask, NormalsTask, SegmentationTask

PRIMARY = {t.name: t.primary_metric for t in (SegmentationTask, DepthTask, NormalsTask)}

_QUERY = """
SELECT a.position, m.arm_id, m.model_id, m.target_sparsity, m.achieved_sparsity, i.task, i.image_id, i.target_id,
       i.saliency_method, i.aoc_norm
FROM irof i JOIN models m USING (model_id) JOIN arms a ON a.arm_id = m.arm_id
WHERE i.fill_mode = ? AND i.layer_role = 'primary' AND i.status IN ('ok', 'single_segment')
ORDER BY a.position, m.target_sparsity, i.task, i.image_id, i.target_id
"""


def bootstrap_ci(values: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``, resampling whole ``groups`` (images)."""
    if len(values) == 0:
        return float("nan"), float("nan")
    uniq, inv = np.unique(groups, return_inverse=True)
    sums = np.bincount(inv, weights=values, minlength=len(uniq))
    counts = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    idx = np.random.default_rng(seed).integers(0, len(uniq), size=(n_boot, len(uniq)))
    stats = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def summarize(con: duckdb.DuckDBPyConnection, fill_mode: str = "quantus", n_boot: int = 1000,
              seed: int = 0) -> list[dict[str, Any]]:
    rows = con.execute(_QUERY, [fill_mode]).fetchall()
    metrics = {(m, t, k): v for m, t, k, v in con.execute(
        "SELECT model_id, task, metric, value FROM task_metrics").fetchall()}
    groups: dict[tuple, dict[str, dict[tuple[str, int], float]]] = {}
    for pos, arm, model, target, achieved, task, iid, tid, method, aoc in rows:
        g = groups.setdefault((pos, arm, model, target, achieved, task), {})
        g.setdefault(method, {})[(iid, tid)] = aoc
    out = []
    for (pos, arm, model, target, achieved, task), by in groups.items():
        gc = by.get("gradcam", {})
        keys = sorted(gc)
        vals = np.array([gc[k] for k in keys], dtype=np.float64)
        lo, hi = bootstrap_ci(vals, np.array([k[0] for k in keys]), n_boot, seed)
        row = {"position": pos, "arm_id": arm, "model_id": model, "task": task, "target_sparsity": target,
               "achieved_sparsity": achieved, "metric": PRIMARY.get(task),
               "metric_value": metrics.get((model, task, PRIMARY.get(task))), "n": len(keys),
               "n_images": len({k[0] for k in keys}), "aoc": float(vals.mean()) if len(vals) else float("nan"),
               "ci_lo": lo, "ci_hi": hi}
        for base in ("random", "reversed"):
            paired = [(gc[k], by[base][k]) for k in keys if k in by.get(base, {})]
            row[base] = float(np.mean([b for _, b in paired])) if paired else float("nan")
            row[f"beats_{base}"] = float(np.mean([a > b for a, b in paired])) if paired else float("nan")
        out.append(row)
    return out


def format_summary(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table of ``summarize``'s rows."""
    head = (f"{'arm':<32} {'task':<12} {'sparsity':>8} {'achieved':>8} {'metric':>18} {'n':>4} "
            f"{'AOC gradcam [95% CI]':>24} {'random':>7} {'reversed':>8} {'>rand':>6} {'>rev':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        metric = f"{r['metric']} {r['metric_value']:.3f}" if r["metric_value"] is not None else "-"
        ci = f"{r['aoc']:.3f} [{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]"
        lines.append(f"{r['arm_id'][:32]:<32} {r['task']:<12} {r['target_sparsity'] * 100:>7.4g}% "
                     f"{r['achieved_sparsity'] * 100:>7.1f}% {metric:>18} {r['n']:>4} {ci:>24} {r['random']:>7.3f} "
                     f"{r['reversed']:>8.3f} {r['beats_random'] * 100:>5.0f}% {r['beats_reversed'] * 100:>5.0f}%")
    return "\n".join(lines)
