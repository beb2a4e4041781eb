"""Read-only queries on the study store: the app's only door to DuckDB (pandas DataFrames and numpy arrays).

Public API::

    store = open_store()                      # env MTLX_STORE, default models_store/study.duckdb (read-only)
    overview(store); explain_settings(store)  # meta facts, row counts per table; the explanation settings
    build_status(store)                       # complete / running / interrupted, arms planned and complete
    arms(store); models(store); model_record(store, id); task_metrics(store); metrics_wide(store)
    arm_models(store, arm_id)                 # the arm's dense model (sparsity 0) and its pruned models
    aoc_per_image(store, fill_mode)           # mean AOC over targets, per model, task, saliency method and image
    figure4(store, fill_mode)                 # mean AOC and its 95 % bootstrap interval (over images) per point
    performance(store)                        # each task's primary metric per point, and the trivial predictor's
    images(store); image_png(store, ids); image(store, id); model_images(store, model_id)
    targets(store, image_id, task, model_ids) # the targets explained on one image (id and name)
    layers(store, model_ids)                  # Grad-CAM layers stored: label, role (primary / ablation)
    saliency_maps(..., layer); predictions(...); superpixels(...); irof_curves(..., layer); similarity(...)
    target_draws(store, model_id)             # the dense model's candidate targets and which were drawn
    beats_chance(store, fill_mode)            # dense models: margin over random, interval, paired test, verdict
    margin_by_layer(store, fill_mode)         # the layer ablation: margin over random per model, task, layer
    chance_per_image(store, fill_mode)        # the per-image margins behind both

Connections, snapshots and errors: ``mtlx_core.store.reader``. Queries read only the columns they show and
decode only the blobs asked for.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mtlx_core.store.artefacts import _in
from mtlx_core.store.artefacts import image as image
from mtlx_core.store.artefacts import image_png as image_png
from mtlx_core.store.artefacts import images as images
from mtlx_core.store.artefacts import irof_curves as irof_curves
from mtlx_core.store.artefacts import layers as layers
from mtlx_core.store.artefacts import model_images as model_images
from mtlx_core.store.artefacts import predictions as predictions
from mtlx_core.store.artefacts import saliency_maps as saliency_maps
from mtlx_core.store.artefacts import similarity as similarity
from mtlx_core.store.artefacts import superpixels as superpixels
from mtlx_core.store.artefacts import target_draws as target_draws
from mtlx_core.store.artefacts import targets as targets
from mtlx_core.store.chance import _check_value
from mtlx_core.store.chance import beats_chance as beats_chance
from mtlx_core.store.chance import chance_per_image as chance_per_image
from mtlx_core.store.chance import margin_by_layer as margin_by_layer
from mtlx_core.store.reader import REQUIRED_TABLES, Store
from mtlx_core.store.reader import open_store as open_store  # re-exported: the pages' one import
from mtlx_core.store.reader import signature as signature
from mtlx_core.store.reader import store_path as store_path
from mtlx_core.store.snapshot import writer_active
from mtlx_core.tasks import DepthTask, NormalsTask, SegmentationTask

logger = logging.getLogger(__name__)

#: primary metric of each task and whether higher is better (the tasks' own)
PRIMARY_METRIC = {t.name: (t.primary_metric, t.higher_is_better[t.primary_metric])
                  for t in (SegmentationTask, DepthTask, NormalsTask)}


# --- what the store holds --------------------------------------------------------------------------------


def overview(store: Store) -> dict[str, Any]:
    """``{"meta": {key: value}, "counts": {table: rows}}``."""
    meta = dict(store.rows("SELECT key, value FROM meta ORDER BY key"))
    counts_sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in REQUIRED_TABLES if t != "meta")
    return {"meta": meta, "counts": dict(store.rows(counts_sql))}


def build_status(store: Store) -> dict[str, Any]:
    """How complete the snapshot is: ``status`` (``complete``; ``running`` while a precompute writes more;
    ``interrupted`` when the last one stopped early: run it again), ``arms_planned``, ``arms_complete``."""
    meta = dict(store.rows("SELECT key, value FROM meta WHERE key IN ('status', 'arms_planned', 'arms_complete')"))
    planned, complete = (json.loads(meta.get(k) or "[]") for k in ("arms_planned", "arms_complete"))
    status = meta.get("status", "complete")
    if writer_active(store.path):
        status = "running"
    elif status == "running":
        status = "interrupted"
    return {"status": status, "arms_planned": planned, "arms_complete": complete}


def explain_settings(store: Store) -> dict[str, Any]:
    """The explanation settings the store was built with (meta ``settings``; empty when not recorded)."""
    rows = store.rows("SELECT value FROM meta WHERE key = 'settings'")
    try:
        return json.loads(rows[0][0]) if rows and rows[0][0] else {}
    except json.JSONDecodeError:
        logger.warning("store %s has unreadable meta settings", store.path)
        return {}


def arms(store: Store) -> pd.DataFrame:
    """One row per arm, in the study's order."""
    return store.df("SELECT arm_id, label, arch, dataset, tasks, weighting, pruning_method, dense_model_id "
                    "FROM arms ORDER BY position, arm_id")


_MODEL_COLS = ("m.model_id, m.arm_id, a.label AS arm, m.run_id, m.arch, m.dataset, m.tasks, m.weighting, "
               "m.pruning_method, m.target_sparsity, m.achieved_sparsity, m.channel_sparsity, m.params, m.macs, "
               "m.parent_id, m.seed, m.code_version")


def models(store: Store) -> pd.DataFrame:
    """Every model (dense and pruned) with its provenance and size, by arm then sparsity."""
    return store.df(f"SELECT {_MODEL_COLS} FROM models m LEFT JOIN arms a USING (arm_id) "
                    "ORDER BY a.position NULLS LAST, m.arm_id, coalesce(m.target_sparsity, 0), m.model_id")


def model_record(store: Store, model_id: str) -> dict[str, Any]:
    """One model's row with its checkpoint path and hash (for loading it in the Live page)."""
    df = store.df(f"SELECT {_MODEL_COLS}, m.checkpoint, m.checkpoint_sha256 FROM models m "
                  "LEFT JOIN arms a USING (arm_id) WHERE m.model_id = ?", [model_id])
    if df.empty:
        raise KeyError(f"no model {model_id!r} in the store")
    return df.iloc[0].to_dict()


def arm_models(store: Store, arm_id: str) -> pd.DataFrame:
    """The arm's dense model (sparsity 0) followed by its pruned models by sparsity."""
    df = store.df(
        "SELECT m.model_id, m.run_id, m.pruning_method, coalesce(m.target_sparsity, 0) AS target_sparsity, "
        "coalesce(m.achieved_sparsity, 0) AS achieved_sparsity, m.params, m.macs, "
        "m.model_id = a.dense_model_id AS is_dense "
        "FROM arms a JOIN models m ON m.arm_id = a.arm_id OR m.model_id = a.dense_model_id "
        "WHERE a.arm_id = ? ORDER BY is_dense DESC, target_sparsity, m.model_id", [arm_id])
    return df.drop_duplicates("model_id").reset_index(drop=True)


def _arm_points_sql() -> str:
    """(arm_id, model_id, sparsity) of every point of every arm's line: the dense model at 0, then pruned."""
    return ("SELECT a.arm_id, m.model_id, CASE WHEN m.model_id = a.dense_model_id THEN 0.0 "
            "ELSE coalesce(m.achieved_sparsity, m.target_sparsity) END AS sparsity, "
            "coalesce(m.target_sparsity, 0) AS target_sparsity "
            "FROM arms a JOIN models m ON m.arm_id = a.arm_id OR m.model_id = a.dense_model_id")


def task_metrics(store: Store, model_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Validation metrics, one row per (model, task, metric); trivial predictors are ``trivial:<dataset>``."""
    where = f"WHERE model_id IN ({_in(model_ids)})" if model_ids is not None else ""
    return store.df(f"SELECT model_id, task, metric, value, higher_is_better, split FROM task_metrics {where} "
                    "ORDER BY model_id, task, metric", list(model_ids or ()))


def metrics_wide(store: Store) -> pd.DataFrame:
    """``task_metrics`` pivoted to one row per model and one column per ``task/metric``."""
    df = task_metrics(store)
    if df.empty:
        return pd.DataFrame(columns=["model_id"])
    df["column"] = df["task"] + "/" + df["metric"]
    return df.pivot_table(index="model_id", columns="column", values="value", aggfunc="first").reset_index()


def performance(store: Store) -> pd.DataFrame:
    """Primary metric per task for every point of every arm, plus the trivial predictor of its dataset."""
    rows = []
    for task, (metric, higher) in PRIMARY_METRIC.items():
        rows.append(store.df(
            f"WITH p AS ({_arm_points_sql()}) SELECT p.arm_id, p.model_id, p.sparsity, p.target_sparsity, "
            "t.task, t.metric, t.value, ? AS higher_is_better, tr.value AS trivial "
            "FROM p JOIN task_metrics t ON t.model_id = p.model_id AND t.task = ? AND t.metric = ? "
            "JOIN arms a ON a.arm_id = p.arm_id LEFT JOIN task_metrics tr ON tr.model_id = 'trivial:' || a.dataset "
            "AND tr.task = t.task AND tr.metric = t.metric ORDER BY p.arm_id, p.sparsity", [higher, task, metric]))
    return pd.concat(rows, ignore_index=True)


# --- faithfulness aggregates (Figure 4) -----------------------------------------------------------------


def fill_modes(store: Store) -> list[str]:
    """Fill modes present in the IROF table (``quantus`` first)."""
    modes = [r[0] for r in store.rows("SELECT DISTINCT fill_mode FROM irof")]
    return sorted(modes, key=lambda m: (m != "quantus", m))


def _per_image_sql(value: str) -> str:
    """Mean AOC over each image's targets per (model, task, saliency method, image), for one fill mode."""
    return (f"SELECT model_id, task, saliency_method, image_id, avg({value}) AS value, count(*) AS n_targets "
            f"FROM irof WHERE fill_mode = ? AND layer_role = 'primary' AND isfinite({value}) "
            "GROUP BY model_id, task, saliency_method, image_id")


def aoc_per_image(store: Store, fill_mode: str = "quantus", value: str = "aoc_norm") -> pd.DataFrame:
    """Mean AOC over an image's targets, per (arm point, task, saliency method, image); NaNs are skipped."""
    _check_value(value)
    return store.df(
        f"WITH p AS ({_arm_points_sql()}), i AS ({_per_image_sql(value)}) "
        "SELECT p.arm_id, p.model_id, p.sparsity, p.target_sparsity, i.task, i.saliency_method, i.image_id, i.value, "
        "i.n_targets FROM p JOIN i USING (model_id) "
        "ORDER BY p.arm_id, p.sparsity, p.model_id, i.task, i.saliency_method, i.image_id", [fill_mode])


def bootstrap_means(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Bootstrap means ``(n_boot, G)`` of each row of ``values`` ``(G, n)``, all rows resampled alike.

    Resample ``b`` draws ``n`` indices with replacement (``default_rng(seed).integers``); its mean is computed
    as (multiplicity of each index) @ values / n, so many groups cost one matrix product.
    """
    _g, n = values.shape
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    counts = np.bincount((np.arange(n_boot)[:, None] * n + idx).ravel(), minlength=n_boot * n).reshape(n_boot, n)
    return counts.astype(np.float64) @ values.T / n  # float: BLAS


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` (NaNs dropped) and its percentile bootstrap interval over the values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = np.quantile(bootstrap_means(v[None], n_boot, seed)[:, 0], [(1 - level) / 2, (1 + level) / 2])
    return float(v.mean()), float(lo), float(hi)


def figure4(store: Store, fill_mode: str = "quantus", value: str = "aoc_norm", n_boot: int = 1000,
            seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Mean AOC per (arm, model, task, saliency method) with a 95 % bootstrap interval over images."""
    _check_value(value)
    keys = ["arm_id", "model_id", "sparsity", "target_sparsity", "task", "saliency_method"]
    per_group = store.rows(  # one row per point with its per-image values (few Python objects)
        f"WITH p AS ({_arm_points_sql()}), i AS ({_per_image_sql(value)}), "
        "g AS (SELECT model_id, task, saliency_method, list(value ORDER BY image_id) AS vals FROM i GROUP BY ALL) "
        "SELECT p.arm_id, p.model_id, p.sparsity, p.target_sparsity, g.task, g.saliency_method, g.vals "
        "FROM p JOIN g USING (model_id) ORDER BY p.arm_id, p.sparsity, p.model_id, g.task, g.saliency_method",
        [fill_mode])
    groups = [(tuple(r[:6]), np.asarray(r[6], dtype=np.float64)) for r in per_group]
    lo = np.full(len(groups), np.nan)
    hi = np.full(len(groups), np.nan)
    by_size: dict[int, list[int]] = {}
    for i, (_, v) in enumerate(groups):
        by_size.setdefault(len(v), []).append(i)
    for _n, members in by_size.items():  # groups with as many images share one resampling
        means = bootstrap_means(np.stack([groups[i][1] for i in members]), n_boot, seed)
        lo[members], hi[members] = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=0)
    rows = [(*key, float(v.mean()), lo[i], hi[i], len(v)) for i, (key, v) in enumerate(groups)]
    return pd.DataFrame(rows, columns=[*keys, "mean", "ci_low", "ci_high", "n_images"])
