"""The study's verdict from a store (D24-D25, issue 18): does pruning change faithfulness, per arm, level, task,
metric and reference? Re-exported by ``mtlx_core.store.query`` for the app; the report and the precompute
summary call ``compute_verdict`` directly.

Public API::

    compute_verdict(reader, settings, value, variants, sensitivity)  # StudyVerdict: cells, per_image, trend, ...
    study_verdict(store, value, variants, delta_share, n_boot)       # the same for the app, once per snapshot
    verdict_grid(store, reference, value, delta_share)               # the primary cells of one reference
    verdict_cell(store, model_id, reference, task, metric, value, delta_share)  # one cell's evidence
    verdict_pareto(store, metric, value, delta_share)  # the cost views' points (D27), Pareto front ringed
    cost_axes(store)                      # the cost axes the store can draw

A cell's statistics come from ``mtlx_core.stats.verdict``; beside them: ``targets_dropped`` and ``zero_maps``
(``verdict_data.selection``; mean over seeds for a pooled row), ``no_better_than_trivial`` (the model's primary
task metric does not beat the trivial predictor's; any seed), the model's task metric and cost columns.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mtlx_core.stats.effects import wilcoxon_p
from mtlx_core.stats.intervals import bca_paired
from mtlx_core.stats.pareto import pareto_points
from mtlx_core.stats.verdict import POOLED, VerdictSettings, slope_table, trend_table, verdict_table
from mtlx_core.store import verdict_data as vd
from mtlx_core.store.reader import Store

logger = logging.getLogger(__name__)

REFERENCES: tuple[str, ...] = ("dense", "control")


@dataclass(frozen=True)
class StudyVerdict:
    """Everything the verdict consists of (DataFrames are shared: copy before changing them)."""

    cells: pd.DataFrame        # one row per cell and seed (+ pooled): stats, verdict, selection, costs
    per_image: pd.DataFrame    # the paired per-image margins and delta behind every cell
    trend: pd.DataFrame        # Page's test per family
    slopes: pd.DataFrame       # slope of delta faithfulness on delta task metric
    models: pd.DataFrame       # model roles, costs, primary task metric and the trivial flag per task
    model_margins: pd.DataFrame  # per model, task and metric: mean margin over images (dense models too)
    labels: tuple[tuple[str, str, str], ...]  # (metric, variant, label) of the metrics compared
    sensitivity: pd.DataFrame | None  # the cells again on the (image, target) pairs both models have
    settings: dict[str, Any]


_MEMO: dict[tuple[Any, ...], StudyVerdict] = {}
_MEMO_LOCK = threading.Lock()
_MEMO_SIZE = 8


def _annotate(cells: pd.DataFrame, roles: pd.DataFrame, sel: pd.DataFrame, perf: pd.DataFrame) -> pd.DataFrame:
    """Selection, trivial flag, task metric and cost columns of each row's model(s) (pooled: over seeds)."""
    if cells.empty:
        return cells.assign(targets_dropped=[], zero_maps=[], no_better_than_trivial=[])
    per = sel.merge(perf[["model_id", "task", "task_metric", "value", "trivial", "no_better_than_trivial"]],
                    on=["model_id", "task"], how="outer")
    costs = [c for c in roles.columns if c in ("params", "macs", "achieved_sparsity") or "latency" in c]
    per = per.merge(roles[["model_id", *costs]], on="model_id", how="left")
    ex = cells[["model_id", "task"]].copy()
    ex["row"] = np.arange(len(cells))
    ex["model_id"] = ex["model_id"].str.split(";")
    ex = ex.explode("model_id").merge(per, on=["model_id", "task"], how="left")
    num = ["targets_dropped", "zero_maps", "value", "trivial", *costs]
    agg = ex.groupby("row").agg({**dict.fromkeys(num, "mean"), "no_better_than_trivial": "any",
                                 "task_metric": "first"})
    out = cells.copy()
    for c in [*num, "no_better_than_trivial", "task_metric"]:
        out[c] = agg[c].reindex(np.arange(len(cells))).to_numpy()
    out["no_better_than_trivial"] = out["no_better_than_trivial"].fillna(False).astype(bool)
    return out.rename(columns={"value": "task_value"})


def compute_verdict(r: vd.Reader, settings: VerdictSettings | None = None, value: str = "score_norm",
                    variants: str = "default", sensitivity: bool = False, explainer: str = "gradcam") -> StudyVerdict:
    """The verdict of every cell of the store read by ``r`` (see the module docstring), on ``explainer``'s
    scores (models without them have no cell)."""
    s = settings or VerdictSettings()
    t0 = time.perf_counter()
    roles = vd.model_roles(r)
    labels = tuple(vd.metric_labels(r, variants))
    margins = vd.target_margins(r, labels, value, explainer=explainer)
    pairs = vd.pairs_frame(roles, margins)
    sel = vd.selection(r, roles, explainer)
    perf, d_perf = vd.performance(r, roles)
    cells = _annotate(verdict_table(pairs, s), roles, sel, perf)
    sens = None
    if sensitivity:
        sens = _annotate(verdict_table(vd.pairs_frame(roles, margins, both_targets=True), s), roles, sel, perf)
    per_image = pairs.assign(delta=pairs["margin_model"] - pairs["margin_reference"])
    models = roles.merge(perf, on="model_id", how="left")
    mm = margins.groupby(["model_id", "task", "metric", "image_id"], sort=False)["margin"].mean().reset_index()
    mm = mm.groupby(["model_id", "task", "metric"], sort=False)["margin"].agg(
        mean_margin="mean", n_images="count").reset_index()
    out = StudyVerdict(cells, per_image, trend_table(pairs), slope_table(cells, d_perf, s.level), models, mm,
                       labels, sens, {**s.to_dict(), "value": value, "variants": variants, "explainer": explainer})
    logger.debug("verdict of %d cells in %.2f s", len(cells), time.perf_counter() - t0)
    return out


def study_verdict(store: Store, value: str = "score_norm", variants: str = "default", delta_share: float = 0.1,
                  n_boot: int = 10_000, seed: int = 0, explainer: str = "gradcam") -> StudyVerdict:
    """``compute_verdict`` of the store's current snapshot, computed once per snapshot and settings (the
    bootstrap of every cell takes about a second on the demo store; the page's queries then read the result)."""
    key = (str(store.path), store.signature, value, variants, delta_share, n_boot, seed, explainer)
    with _MEMO_LOCK:
        hit = _MEMO.get(key)
    if hit is not None:
        return hit
    res = compute_verdict(store, VerdictSettings(delta_share=delta_share, n_boot=n_boot, seed=seed), value, variants,
                          explainer=explainer)
    with _MEMO_LOCK:
        while len(_MEMO) >= _MEMO_SIZE:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = res
    return res


def verdict_pareto(store: Store, metric: str, value: str = "score_norm", delta_share: float = 0.1,
                   explainer: str = "gradcam") -> pd.DataFrame:
    """The cost views' points (D27): one row per (model, task) with its role, costs (parameters, MACs, latency
    columns the store has, ``level``: nominal sparsity), primary task metric (``task_value``), mean margin under
    ``metric`` and ``front`` (Pareto front of task metric, margin and MACs among the task's models)."""
    v = study_verdict(store, value, delta_share=delta_share, explainer=explainer)  # the grid's (memoised)
    if metric not in {lab for _, _, lab in v.labels}:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(lab for _, _, lab in v.labels)}")
    return pareto_points(v.models, v.model_margins, metric, "macs")


def cost_axes(store: Store) -> list[str]:
    """The cost axes the store can draw: its cost columns that hold a value, then ``level`` (nominal sparsity)."""
    cols = vd.cost_columns(store)
    if not cols:
        return ["level"]
    counts = store.df("SELECT " + ", ".join(f"count({c}) AS {c}" for c in cols) + " FROM models").iloc[0]
    return [c for c in cols if int(counts[c]) > 0] + ["level"]


def check_reference(reference: str) -> None:
    if reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}; valid references: {', '.join(REFERENCES)}")


def verdict_grid(store: Store, reference: str = "dense", value: str = "score_norm",
                 delta_share: float = 0.1, explainer: str = "gradcam") -> pd.DataFrame:
    """The primary row of every cell compared with ``reference`` (one verdict per arm, level, task, metric)."""
    check_reference(reference)
    c = study_verdict(store, value, delta_share=delta_share, explainer=explainer).cells
    return c[c["primary"] & (c["reference"] == reference)].reset_index(drop=True)


def _cell_sensitivity(store: Store, label: tuple[str, str, str], rows: pd.DataFrame,
                      value: str, explainer: str = "gradcam") -> dict[str, float]:
    """Mean delta, BCa interval and Wilcoxon p of one cell on the (image, target) pairs both models have
    (per image: mean over those targets, then over seeds)."""
    if rows.empty:
        return {"n_images": 0, "mean_delta": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_wilcoxon": np.nan}
    ids = sorted(set(rows["model_id"]) | set(rows["reference_id"]))
    t = vd.target_margins(store, [label], value, ids, str(rows["task"].iloc[0]), explainer)
    pairs = rows[["model_id", "reference_id", "seed"]].drop_duplicates()
    m = t.merge(pairs, on="model_id").merge(
        t.rename(columns={"model_id": "reference_id", "margin": "margin_reference"}),
        on=["reference_id", "task", "metric", "image_id", "target_id"])
    per = m.groupby(["seed", "image_id"])[["margin", "margin_reference"]].mean().groupby("image_id").mean()
    if per.empty:
        return {"n_images": 0, "mean_delta": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_wilcoxon": np.nan}
    x, y = per["margin"].to_numpy(), per["margin_reference"].to_numpy()
    lo, hi = bca_paired(x[None], y[None])
    return {"n_images": int(x.size), "mean_delta": float((x - y).mean()), "ci_low": float(lo[0]),
            "ci_high": float(hi[0]), "p_wilcoxon": wilcoxon_p(x - y)}


def verdict_cell(store: Store, model_id: str, reference: str, task: str, metric: str,
                 value: str = "score_norm", delta_share: float = 0.1, explainer: str = "gradcam") -> dict[str, Any]:
    """One cell's evidence: ``row`` (its statistics), ``seeds`` (per-seed rows of a pooled cell), ``family``
    (the rows of its arm x task x metric x reference family, for the test figures), ``pairs`` (per-image
    margins, model and reference, with delta), ``extremes`` (the images with the lowest and highest delta and
    the target on which the two models differ most there), ``trend`` (its family's Page test), ``sensitivity``
    (the cell on the (image, target) pairs both models have) and ``metric_variant`` (metric, variant)."""
    check_reference(reference)
    v = study_verdict(store, value, delta_share=delta_share, explainer=explainer)
    c = v.cells
    hit = c[(c["model_id"] == model_id) & (c["reference"] == reference) & (c["task"] == task)
            & (c["metric"] == metric)]
    if hit.empty:
        raise KeyError(f"no verdict cell for model {model_id!r}, reference {reference!r}, task {task!r}, "
                       f"metric {metric!r}")
    row = hit.iloc[0]
    ids = model_id.split(";")
    fam = c[(c["arm_id"] == row["arm_id"]) & (c["task"] == task) & (c["metric"] == metric)
            & (c["reference"] == reference) & (c["primary"] == row["primary"])]
    if row["seed"] != POOLED and not row["primary"]:
        fam = fam[fam["seed"] == row["seed"]]
    p = v.per_image
    pairs = p[p["model_id"].isin(ids) & (p["reference"] == reference) & (p["task"] == task)
              & (p["metric"] == metric)].reset_index(drop=True)
    label = next(lab for lab in v.labels if lab[2] == metric)
    tr = v.trend[(v.trend["arm_id"] == row["arm_id"]) & (v.trend["task"] == task) & (v.trend["metric"] == metric)
                 & (v.trend["reference"] == reference)]
    seeds = c[c["model_id"].isin(ids) & (c["reference"] == reference) & (c["task"] == task)
              & (c["metric"] == metric) & (c["seed"] != POOLED)]
    return {"row": row.to_dict(), "seeds": seeds.reset_index(drop=True), "family": fam.reset_index(drop=True),
            "pairs": pairs, "extremes": _extremes(store, label, pairs, value, explainer),
            "trend": tr.reset_index(drop=True), "sensitivity": _cell_sensitivity(store, label, pairs, value, explainer),
            "metric_variant": (label[0], label[1])}


def _extremes(store: Store, label: tuple[str, str, str], pairs: pd.DataFrame, value: str,
              explainer: str = "gradcam") -> pd.DataFrame:
    """The images with the lowest and the highest delta (seed-averaged), each with the target both models have
    whose margins differ most (the one whose curves tell the story)."""
    cols = ["end", "image_id", "delta", "model_id", "reference_id", "target_id"]
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    by_image = pairs.groupby("image_id")["delta"].mean().sort_values()
    ends = [("lowest", by_image.index[0]), ("highest", by_image.index[-1])]
    first = pairs.sort_values("seed").iloc[0]
    t = vd.target_margins(store, [label], value, [first["model_id"], first["reference_id"]], str(first["task"]),
                          explainer)
    rows = []
    for end, img in ends:
        ti = t[t["image_id"] == img].pivot_table(index="target_id", columns="model_id", values="margin")
        target = None
        if first["model_id"] in ti and first["reference_id"] in ti:
            gap = (ti[first["model_id"]] - ti[first["reference_id"]]).abs().dropna()
            target = int(gap.idxmax()) if not gap.empty else None
        if target is None and not ti.empty:
            target = int(ti.index[0])
        rows.append((end, img, float(by_image[img]), first["model_id"], first["reference_id"], target))
    return pd.DataFrame(rows, columns=cols)
