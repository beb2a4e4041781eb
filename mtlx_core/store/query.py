"""Read-only queries on the study store: the app's only door to DuckDB (pandas DataFrames and numpy arrays).

Public API::

    store = open_store()                      # env MTLX_STORE, default models_store/study.duckdb (read-only)
    overview(store); explain_settings(store)  # meta facts, row counts per table; the explanation settings
    task_info(store); task_order(tasks)       # each task's label and how its prediction is drawn (Task.describe)
    build_status(store)                       # complete / running / interrupted, arms planned and complete
    arms(store); models(store); model_record(store, id); task_metrics(store); metrics_wide(store)
    arm_models(store, arm_id)                 # the arm's dense model (sparsity 0) and its pruned models
    pruning_summary(store); pruning_by_module(store)  # what each pruning did, per model and per module kind
    metric_variants(store)                    # the faithfulness metrics and variants stored (IROF first)
    faithfulness_per_image(store, metric, variant, value)  # per point, task, layer, image: explainer, random
                                              # (mean of K orderings), reversed, margin over chance
    figure4(store, metric, variant, value)    # mean and 95 % bootstrap interval over images per point and series
    performance(store)                        # each task's primary metric per point, and the trivial predictor's
    images(store); image_png(store, ids); image(store, id); model_images(store, model_id)
    targets(store, image_id, task, model_ids) # the targets explained on one image (id and name)
    layers(store, model_ids)                  # Grad-CAM layers stored: label, role (primary / ablation)
    explainers(store, ids, image, task, target, layer)  # explainers stored (of one target), Grad-CAM first
    saliency_maps(..., layer, explainer); predictions(...); superpixels(...); similarity(...)
    faithfulness_curves(store, ids, image, task, target, metric, variant, layer, explainer)  # MoRF, LeRF, random
    target_draws(store, model_id)             # the dense model's candidate targets and which were drawn
    beats_chance(store, metric, variant)      # dense models: margin over random, interval, paired test, verdict
    margin_by_layer(store, metric, variant)   # the layer ablation: margin over random per model, task, layer
    chance_per_image(store, metric, variant)  # the per-image margins behind both
    verdict_grid(store, reference, value, delta_share)  # does pruning change faithfulness? one verdict per cell
    verdict_cell(store, model_id, reference, task, metric, value, delta_share)  # one cell's evidence (D25)
    verdict_pareto(store, metric, value, delta_share); cost_axes(store)  # the cost views (D27)
    similarity_vs_sparsity(store, measure)    # each pruned model's maps vs its dense model's (mean, interval)
    seed_noise(store, measure)                # two dense seeds' maps vs each other: the noise floor (a band)
    cross_task_vs_sparsity(store, measure)    # how alike the tasks' maps are per model, and the change from dense
    cross_task_per_image(store)               # the per-image values behind it (mtlx_core.store.cross_task)
    sanity_summary(store); sanity_randomisation / sanity_heads / sanity_reference(store, model_id, explainer)
                                              # the dense models' sanity checks (which pass; curves; head table)
    map_similarity(a, b, topk); decode_png(bytes)   # helpers the pages use (no torch)

Connections, snapshots and errors: ``mtlx_core.store.reader``. Queries read only the columns they show and
decode only the blobs asked for.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd

from mtlx_core.explain.similarity import map_similarity as map_similarity
from mtlx_core.stats.pareto import COST_AXES as COST_AXES
from mtlx_core.store.aggregate import N_BOOT as N_BOOT
from mtlx_core.store.artefacts import _in
from mtlx_core.store.artefacts import explainers as explainers
from mtlx_core.store.artefacts import image as image
from mtlx_core.store.artefacts import image_png as image_png
from mtlx_core.store.artefacts import images as images
from mtlx_core.store.artefacts import layers as layers
from mtlx_core.store.artefacts import model_images as model_images
from mtlx_core.store.artefacts import predictions as predictions
from mtlx_core.store.artefacts import saliency_maps as saliency_maps
from mtlx_core.store.artefacts import similarity as similarity
from mtlx_core.store.artefacts import superpixels as superpixels
from mtlx_core.store.artefacts import target_draws as target_draws
from mtlx_core.store.artefacts import targets as targets
from mtlx_core.store.chance import beats_chance as beats_chance
from mtlx_core.store.chance import chance_per_image as chance_per_image
from mtlx_core.store.chance import margin_by_layer as margin_by_layer
from mtlx_core.store.codec import decode_png as decode_png
from mtlx_core.store.cross_task import CROSS_TASK_MEASURES as CROSS_TASK_MEASURES
from mtlx_core.store.cross_task import cross_task_per_image as cross_task_per_image
from mtlx_core.store.cross_task import cross_task_vs_sparsity as cross_task_vs_sparsity
from mtlx_core.store.errors import BUILD_HINT as BUILD_HINT
from mtlx_core.store.errors import StoreBusyError as StoreBusyError
from mtlx_core.store.errors import StoreError as StoreError
from mtlx_core.store.errors import StoreMissingError as StoreMissingError
from mtlx_core.store.faith import SERIES as SERIES
from mtlx_core.store.faith import VALUES as VALUES
from mtlx_core.store.faith import default_variant as default_variant
from mtlx_core.store.faith import faithfulness_curves as faithfulness_curves
from mtlx_core.store.faith import faithfulness_per_image as faithfulness_per_image
from mtlx_core.store.faith import figure4 as figure4
from mtlx_core.store.faith import metric_variants as metric_variants
from mtlx_core.store.faith import settings_of as settings_of
from mtlx_core.store.reader import REQUIRED_TABLES, Store
from mtlx_core.store.reader import open_store as open_store  # re-exported: the pages' one import
from mtlx_core.store.reader import signature as signature
from mtlx_core.store.reader import store_path as store_path
from mtlx_core.store.sanity import VERDICT_CHECKS as VERDICT_CHECKS
from mtlx_core.store.sanity import sanity_heads as sanity_heads
from mtlx_core.store.sanity import sanity_randomisation as sanity_randomisation
from mtlx_core.store.sanity import sanity_reference as sanity_reference
from mtlx_core.store.sanity import sanity_summary as sanity_summary
from mtlx_core.store.similarity_views import SIMILARITY_MEASURES as SIMILARITY_MEASURES
from mtlx_core.store.similarity_views import seed_noise as seed_noise
from mtlx_core.store.similarity_views import similarity_vs_sparsity as similarity_vs_sparsity
from mtlx_core.store.snapshot import writer_active
from mtlx_core.store.verdict import REFERENCES as REFERENCES
from mtlx_core.store.verdict import cost_axes as cost_axes
from mtlx_core.store.verdict import verdict_cell as verdict_cell
from mtlx_core.store.verdict import verdict_grid as verdict_grid
from mtlx_core.store.verdict import verdict_pareto as verdict_pareto
from mtlx_core.store.verdict_data import ARM_LINE_JOIN_SQL

logger = logging.getLogger(__name__)



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


#: ``Task.describe()`` of the built-in tasks, for stores written before the store recorded it (meta ``tasks``);
#: a test keeps it equal to the task classes (this module must not import them: they import torch)
BUILTIN_TASKS: dict[str, dict[str, str]] = {
    "segmentation": {"label": "Segmentation", "display": "labels", "primary_metric": "miou"},
    "depth": {"label": "Depth", "display": "scalar", "primary_metric": "rel_err"},
    "normals": {"label": "Surface normals", "display": "rgb", "primary_metric": "median_angle"}}


def task_info(store: Store) -> dict[str, dict[str, str]]:
    """``{task: {"label", "display", "primary_metric"}}`` of every task in the store: what precompute recorded
    (meta ``tasks``: plugin tasks too), else the built-in tasks' (``BUILTIN_TASKS``); a task found in the arms but
    in neither gets its name as label and a one-channel heatmap."""
    rows = store.rows("SELECT value FROM meta WHERE key = 'tasks'")
    try:
        recorded = json.loads(rows[0][0]) if rows and rows[0][0] else {}
    except json.JSONDecodeError:
        logger.warning("store %s has unreadable meta tasks", store.path)
        recorded = {}
    names = [str(t) for (t,) in store.rows("SELECT DISTINCT unnest(tasks) FROM arms ORDER BY 1")]
    info = {**BUILTIN_TASKS, **recorded}
    return {t: info.get(t, {"label": t.replace("_", " ").capitalize(), "display": "scalar", "primary_metric": ""})
            for t in task_order([*recorded, *names])}


def task_order(tasks: Sequence[str]) -> list[str]:
    """``tasks`` (an arm's) in the app's order: the built-in tasks first (segmentation, depth, normals), then the
    others by name."""
    builtin = list(BUILTIN_TASKS)
    return sorted(dict.fromkeys(str(t) for t in tasks),
                  key=lambda t: (builtin.index(t) if t in builtin else len(builtin), t))


def arms(store: Store) -> pd.DataFrame:
    """One row per arm, in the study's order."""
    return store.df("SELECT arm_id, label, arch, dataset, tasks, weighting, pruning_method, dense_model_id "
                    "FROM arms ORDER BY position, arm_id")


_MODEL_COLS = ("m.model_id, m.arm_id, a.label AS arm, m.run_id, m.arch, m.dataset, m.tasks, m.weighting, "
               "m.pruning_method, m.target_sparsity, m.achieved_sparsity, m.channel_sparsity, m.params, m.macs, "
               "m.latency_cpu_ms, m.latency_gpu_ms, m.parent_id, m.seed, m.code_version")


def models(store: Store) -> pd.DataFrame:
    """Every model (dense, pruned and control) with its provenance and cost axes (D27: parameters, MACs,
    latency), by arm then sparsity."""
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
        f"FROM arms a {ARM_LINE_JOIN_SQL} WHERE a.arm_id = ? ORDER BY is_dense DESC, target_sparsity, m.model_id",
        [arm_id])
    return df.drop_duplicates("model_id").reset_index(drop=True)


def _pruning_records(store: Store) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(model row, pruning record) of every pruned model: the record is ``models.config``'s ``pruning`` entry
    (``mtlx_core.prune.record.PruningRecord.to_dict``)."""
    df = store.df("SELECT m.model_id, a.label AS arm, m.target_sparsity, "
                  "json_extract_string(m.config, '$.pruning') AS pruning FROM models m LEFT JOIN arms a "
                  "USING (arm_id) WHERE m.pruning_method IS NOT NULL "
                  "ORDER BY a.position NULLS LAST, m.arm_id, m.target_sparsity, m.model_id")
    out = []
    for row in df.to_dict("records"):
        try:
            rec = json.loads(row.pop("pruning") or "{}")
        except json.JSONDecodeError:
            logger.warning("model %s has an unreadable pruning record", row["model_id"])
            continue
        out.append((row, rec))
    return out


def pruning_summary(store: Store) -> pd.DataFrame:
    """One row per pruned model: method, Network Slimming mode, parameters and MACs before and after (and their
    ratios), share of the method's prunable channels removed, kept channels with |gamma| < 1e-3."""
    rows = []
    for row, r in _pruning_records(store):
        p0, p1, m0, m1 = (r.get(k) for k in ("params_before", "params_after", "macs_before", "macs_after"))
        rows.append({**row, "method": r.get("method"), "variant": r.get("variant"),
                     "netslim_mode": r.get("netslim_mode"), "structured": r.get("structured"),
                     "params_before": p0, "params_after": p1, "params_ratio": p0 / p1 if p0 and p1 else None,
                     "macs_before": m0, "macs_after": m1, "macs_ratio": m0 / m1 if m0 and m1 else None,
                     "channels_removed": r.get("channels_removed"), "small_gamma_kept": r.get("small_gamma_kept"),
                     "finetune_bn_l1": (r.get("finetune") or {}).get("bn_l1")})
    return pd.DataFrame(rows, columns=["model_id", "arm", "target_sparsity", "method", "variant", "netslim_mode",
                                       "structured", "params_before", "params_after", "params_ratio",
                                       "macs_before", "macs_after", "macs_ratio", "channels_removed",
                                       "small_gamma_kept", "finetune_bn_l1"])


def pruning_by_module(store: Store) -> pd.DataFrame:
    """One row per pruned model and module kind (trunk encoder, trunk decoder, shared attention convs, attention
    hidden, heads): ``before`` / ``after`` in ``unit`` (output channels, or weights for unstructured methods)
    and the share ``removed``."""
    rows = [{**row, "method": r.get("method"), "variant": r.get("variant"), "kind": m.get("kind"),
             "module": m.get("label", m.get("kind")), "unit": m.get("unit"), "before": m.get("before"),
             "after": m.get("after"), "removed": m.get("removed")}
            for row, r in _pruning_records(store) for m in r.get("removed_by_kind") or []]
    return pd.DataFrame(rows, columns=["model_id", "arm", "target_sparsity", "method", "variant", "kind", "module",
                                       "unit", "before", "after", "removed"])


def _arm_points_sql() -> str:
    """(arm_id, model_id, sparsity) of every point of every arm's line: the dense model at 0, then pruned."""
    return ("SELECT a.arm_id, m.model_id, CASE WHEN m.model_id = a.dense_model_id THEN 0.0 "
            "ELSE coalesce(m.achieved_sparsity, m.target_sparsity) END AS sparsity, "
            "coalesce(m.target_sparsity, 0) AS target_sparsity "
            f"FROM arms a {ARM_LINE_JOIN_SQL}")


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
    """Primary metric per task (``task_metrics.is_primary``, recorded from each Task) for every point of every
    arm, plus the trivial predictor of its dataset."""
    return store.df(
        f"WITH p AS ({_arm_points_sql()}) SELECT p.arm_id, p.model_id, p.sparsity, p.target_sparsity, "
        "t.task, t.metric, t.value, t.higher_is_better, tr.value AS trivial "
        "FROM p JOIN task_metrics t ON t.model_id = p.model_id AND t.is_primary "
        "JOIN arms a ON a.arm_id = p.arm_id LEFT JOIN task_metrics tr ON tr.model_id = 'trivial:' || a.dataset "
        "AND tr.task = t.task AND tr.metric = t.metric ORDER BY p.arm_id, p.sparsity, t.task")


def class_names(dataset: str) -> tuple[str, ...]:
    """Segmentation class names of a dataset kind (``mtlx_core.data.layout``; no torch)."""
    from mtlx_core.data.layout import get_dataset_spec

    return get_dataset_spec(dataset).classes
