"""The study's summary per arm, task and sparsity: the task's primary metric and, for one faithfulness metric,
the explainer's score, the random orderings' and the reversed ordering's, and the margin over chance.

``summarize(con, metric)`` reads a store (work file or snapshot). Every number is an aggregate as
``mtlx_core.store.aggregate`` defines it (the one definition the app and exports use too): the mean over an
image's targets with status ``ok``, then the mean over images, with a 95 % percentile bootstrap interval that
resamples whole images.
"""

from __future__ import annotations

import logging
from typing import Any

import duckdb
import numpy as np

from mtlx_core.store.aggregate import mean_interval, per_image
from mtlx_core.store.faith import target_scores_sql
from mtlx_core.store.verdict_data import IS_CONTROL_SQL

logger = logging.getLogger(__name__)

_DEFAULT_VARIANT = ("SELECT variant FROM faithfulness WHERE metric = ? GROUP BY variant "
                    "ORDER BY variant LIKE '%depth_floor=%', variant NOT LIKE '%fill=quantus%', variant LIMIT 1")


def summarize(con: duckdb.DuckDBPyConnection, metric: str = "irof", variant: str | None = None,
              n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """One dict per (arm, model, task) at the primary layer (see the module docstring)."""
    if variant is None:
        got = con.execute(_DEFAULT_VARIANT, [metric]).fetchone()
        if got is None:
            return []
        variant = str(got[0])
    df = con.execute(
        f"WITH t AS ({target_scores_sql('score_norm')}) SELECT a.position, m.arm_id, m.model_id, "
        "m.target_sparsity, m.achieved_sparsity, t.task, t.image_id, t.target_id, t.explainer_value, t.random, "
        "t.reversed, t.margin FROM t JOIN models m USING (model_id) JOIN arms a ON a.arm_id = m.arm_id "
        f"WHERE t.layer_role = 'primary' AND t.explainer = 'gradcam' AND NOT {IS_CONTROL_SQL} "
        "ORDER BY a.position, m.target_sparsity, t.task, t.image_id, t.target_id", [metric, variant, metric]).df()
    primary = {(m, t): (k, v) for m, t, k, v in con.execute(
        "SELECT model_id, task, metric, value FROM task_metrics WHERE is_primary").fetchall()}
    keys = ["position", "arm_id", "model_id", "target_sparsity", "achieved_sparsity", "task"]
    if df.empty:
        return []
    images = per_image(df, [*keys, "image_id"], ["explainer_value", "random", "reversed", "margin"])
    out = []
    for key, g in images.groupby(keys, sort=False):
        row = dict(zip(keys, key, strict=True))
        task_metric, value = primary.get((row["model_id"], row["task"]), (None, None))
        mean, lo, hi = mean_interval(g["explainer_value"].to_numpy(), n_boot, seed)
        m, mlo, mhi = mean_interval(g["margin"].to_numpy(), n_boot, seed)
        row.update({"metric": task_metric, "metric_value": value, "faithfulness": metric, "variant": variant,
                    "n": int(g["n_targets"].sum()), "n_images": len(g), "score": mean, "ci_lo": lo, "ci_hi": hi,
                    "random": float(np.nanmean(g["random"])) if g["random"].notna().any() else float("nan"),
                    "reversed": float(np.nanmean(g["reversed"])) if g["reversed"].notna().any() else float("nan"),
                    "margin": m, "margin_lo": mlo, "margin_hi": mhi})
        out.append(row)
    return out


def format_summary(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table of ``summarize``'s rows."""
    name = rows[0]["faithfulness"] if rows else "score"
    head = (f"{'arm':<32} {'task':<12} {'sparsity':>8} {'achieved':>8} {'metric':>18} {'img':>4} "
            f"{name + ' [95% CI]':>24} {'random':>7} {'reversed':>8} {'margin [95% CI]':>26}")
    lines = [head, "-" * len(head)]
    for r in rows:
        metric = f"{r['metric']} {r['metric_value']:.3f}" if r["metric_value"] is not None else "-"
        ci = f"{r['score']:.3f} [{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]"
        margin = f"{r['margin']:+.3f} [{r['margin_lo']:+.3f}, {r['margin_hi']:+.3f}]"
        lines.append(f"{r['arm_id'][:32]:<32} {r['task']:<12} {r['target_sparsity'] * 100:>7.4g}% "
                     f"{(r['achieved_sparsity'] or 0) * 100:>7.1f}% {metric:>18} {r['n_images']:>4} {ci:>24} "
                     f"{r['random']:>7.3f} {r['reversed']:>8.3f} {margin:>26}")
    return "\n".join(lines)


VERDICT_MARKS = {"lower": "v", "higher": "^", "equivalent": "=", "inconclusive": "?"}


def verdict_summary(con: duckdb.DuckDBPyConnection, n_boot: int = 10_000) -> str:
    """The verdict grid (D25, ``mtlx_core.store.verdict``) as text: one line per arm, reference and level, one
    column per task and metric; ``v`` lower, ``^`` higher, ``=`` equivalent, ``?`` inconclusive, ``x`` after the
    mark: the model's task metric is no better than the trivial predictor's, ``.``: no data. Level ``ctrl``: the
    arm's training-budget control against the dense model."""
    from mtlx_core.stats.verdict import VerdictSettings
    from mtlx_core.store.verdict import compute_verdict
    from mtlx_core.store.verdict_data import ConnectionReader

    cells = compute_verdict(ConnectionReader(con), VerdictSettings(n_boot=n_boot)).cells
    cells = cells[cells["primary"]]
    if cells.empty:
        return "(no pruned model with faithfulness scores)"
    cols = sorted(set(zip(cells["task"], cells["metric"], strict=True)))
    names = [f"{t[:3]}/{m[:5]}" for t, m in cols]
    width = max(len(n) for n in names)
    head = f"{'arm':<32} {'ref':<7} {'level':>6} " + " ".join(f"{n:>{width}}" for n in names)
    lines = [head, "-" * len(head)]
    for (arm, ref, level), g in cells.groupby(["arm_id", "reference", "level"], sort=True):
        by = {(t, m): VERDICT_MARKS[v] + ("x" if trivial else "") for t, m, v, trivial in
              g[["task", "metric", "verdict", "no_better_than_trivial"]].itertuples(index=False)}
        shown = "ctrl" if level == 0 else f"{level * 100:.4g}%"  # level 0: the control against the dense model
        lines.append(f"{arm[:32]:<32} {ref:<7} {shown:>6} "
                     + " ".join(f"{by.get(c, '.'):>{width}}" for c in cols))
    return "\n".join(lines)


def log_result(result: Any, verdict: str) -> None:
    """Log a finished precompute (``PrecomputeResult``): the summary, the verdict grid, time per unit kind."""
    logger.info("study summary (normalised scores at the primary layer; margin = over the mean of the random "
                "orderings; 95 %% bootstrap CI over images):\n%s", format_summary(result.summary))
    logger.info("verdict (docs/verdict.md; v lower, ^ higher, = equivalent, ? inconclusive, x: task metric no "
                "better than trivial):\n%s", verdict)
    for kind, n, wall, cpu in result.timing:
        logger.info("store total, %-7s units: %3d, %7.1f s wall, %7.1f s CPU", kind, n, wall, cpu)
    logger.info("%s: %d units run (%s), %d already done, %.1f s", result.store, sum(result.executed.values()),
                dict(result.executed), len(result.skipped), result.seconds)
