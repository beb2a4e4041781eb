"""Faithfulness queries over the ``faithfulness`` table, for any metric of the family (re-exported by
``mtlx_core.store.query``, the app's one door to the store; no torch).

Public API::

    metric_variants(store)                        # metric, variant, kind, rows, is_default (IROF first)
    faithfulness_per_image(store, metric, variant, value)
        # per arm point, task, layer and image: the explainer's score, the mean of the K random orderings,
        # the reversed ordering's, and the margin over chance (mean over the image's targets, status ok)
    figure4(store, metric, variant, value)        # mean and 95 % bootstrap interval over images per point and
                                                  # series (explainer, random, reversed, margin)
    faithfulness_curves(store, model_ids, image_id, task, target_id, metric, variant, layer)

``value`` is ``score_norm`` (oriented, higher = more faithful; the default) or ``score`` (the metric's own
number). The margin of a target (D24) is the explainer's value minus the mean over the random orderings of
the same target; a derived metric (AbPC) has chance 0 by construction, so its margin is its value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from mtlx_core.store.aggregate import N_BOOT, group_intervals, per_image
from mtlx_core.store.artefacts import _in
from mtlx_core.store.reader import Store
from mtlx_core.store.verdict_data import ARM_LINE_JOIN_SQL

VALUES: tuple[str, ...] = ("score_norm", "score")
SERIES: tuple[str, ...] = ("explainer", "random", "reversed", "margin")


def check_value(value: str) -> None:
    if value not in VALUES:
        raise ValueError(f"unknown score column {value!r}; valid columns: {', '.join(VALUES)}")


def metric_variants(store: Store) -> pd.DataFrame:
    """Every (metric, variant) in the store with its kind (``curve``, ``map``, ``derived``), its row count and
    whether it is the metric's default variant (the study's first fill and the absolute depth floor)."""
    df = store.df(
        "SELECT metric, variant, CASE WHEN metric LIKE 'abpc%' THEN 'derived' WHEN max(n_steps) > 0 THEN 'curve' "
        "ELSE 'map' END AS kind, count(*) AS n_rows, min(settings_key) AS settings_key FROM faithfulness "
        "GROUP BY metric, variant")
    if df.empty:
        return pd.DataFrame(columns=["metric", "variant", "kind", "n_rows", "settings_key", "is_default"])
    df["_floor"] = df["variant"].str.contains("depth_floor=")
    df["_fill"] = ~df["variant"].str.contains("fill=quantus")
    df["_first"] = df["metric"] != "irof"
    df = df.sort_values(["_first", "metric", "_floor", "_fill", "variant"]).reset_index(drop=True)
    df["is_default"] = ~df.duplicated("metric")
    return df.drop(columns=["_floor", "_fill", "_first"])


def default_variant(store: Store, metric: str) -> str:
    df = metric_variants(store)
    hit = df[(df["metric"] == metric) & df["is_default"]]
    if hit.empty:
        valid = ", ".join(dict.fromkeys(df["metric"])) or "none (no faithfulness rows yet)"
        raise ValueError(f"no metric {metric!r} in the store; stored metrics: {valid}")
    return str(hit["variant"].iloc[0])


def _points_sql() -> str:
    return ("SELECT a.arm_id, m.model_id, m.model_id = a.dense_model_id AS is_dense, "
            "CASE WHEN m.model_id = a.dense_model_id THEN 0.0 ELSE coalesce(m.achieved_sparsity, "
            "m.target_sparsity) END AS sparsity, coalesce(m.target_sparsity, 0) AS target_sparsity "
            f"FROM arms a {ARM_LINE_JOIN_SQL}")


def target_scores_sql(value: str) -> str:
    """Per (model, task, layer, image, target) of one metric variant (two parameters: metric, variant): the
    explainer's value (``morf``, status ok), the mean of the random orderings and the reversed ordering's."""
    check_value(value)
    return (
        f"WITH f AS (SELECT * FROM faithfulness WHERE metric = ? AND variant = ?), "
        f"e AS (SELECT model_id, task, explainer, layer_label, layer_role, image_id, target_id, {value} AS v "
        "  FROM f WHERE ordering = 'morf' AND explainer <> 'random' AND status = 'ok'), "
        f"l AS (SELECT model_id, task, explainer, layer_label, image_id, target_id, {value} AS v "
        "  FROM f WHERE ordering = 'lerf' AND status = 'ok'), "
        f"r AS (SELECT model_id, task, image_id, target_id, avg({value}) AS v, count(*) AS k "
        "  FROM f WHERE ordering = 'random' AND status = 'ok' GROUP BY ALL) "
        "SELECT e.model_id, e.task, e.explainer, e.layer_label, e.layer_role, e.image_id, e.target_id, "
        "e.v AS explainer_value, r.v AS random, l.v AS reversed, "
        "CASE WHEN ? LIKE 'abpc%' THEN e.v ELSE e.v - r.v END AS margin, r.k AS n_random "
        "FROM e LEFT JOIN r USING (model_id, task, image_id, target_id) "
        "LEFT JOIN l USING (model_id, task, explainer, layer_label, image_id, target_id)")


def faithfulness_per_image(store: Store, metric: str = "irof", variant: str | None = None,
                           value: str = "score_norm", explainer: str | None = "gradcam") -> pd.DataFrame:
    """One row per (arm point, task, explainer, layer, image): means over the image's targets (status ok) of the
    explainer's value, the random orderings' mean, the reversed ordering's, and the margin over chance."""
    variant = variant or default_variant(store, metric)
    where = "" if explainer is None else "WHERE t.explainer = ?"
    df = store.df(
        f"WITH p AS ({_points_sql()}), t AS ({target_scores_sql(value)}) "
        "SELECT p.arm_id, p.model_id, p.is_dense, p.sparsity, p.target_sparsity, t.task, t.explainer, "
        "t.layer_label, t.layer_role, t.image_id, t.target_id, t.explainer_value, t.random, t.reversed, t.margin "
        f"FROM t JOIN p USING (model_id) {where} "
        "ORDER BY p.arm_id, p.sparsity, p.model_id, t.task, t.layer_label, t.image_id, t.target_id",
        [metric, variant, metric, *([] if explainer is None else [explainer])])
    keys = ["arm_id", "model_id", "is_dense", "sparsity", "target_sparsity", "task", "explainer", "layer_label",
            "layer_role", "image_id"]
    if df.empty:
        return pd.DataFrame(columns=[*keys, "explainer_value", "random", "reversed", "margin", "n_targets"])
    return per_image(df, keys, ["explainer_value", "random", "reversed", "margin"])


def figure4(store: Store, metric: str = "irof", variant: str | None = None, value: str = "score_norm",
            n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95, explainer: str = "gradcam") -> pd.DataFrame:
    """Mean and 95 % bootstrap interval over images per (arm point, task, series) at the primary layer;
    series: ``explainer`` (``explainer``'s scores; default Grad-CAM), ``random`` (mean of the K orderings),
    ``reversed``, ``margin``."""
    per = faithfulness_per_image(store, metric, variant, value, explainer)
    per = per[per["layer_role"] == "primary"]
    keys = ["arm_id", "model_id", "sparsity", "target_sparsity", "task"]
    cols = [*keys, "series", "mean", "ci_low", "ci_high", "n_images"]
    if per.empty:
        return pd.DataFrame(columns=cols)
    long = per.melt(id_vars=[*keys, "image_id"], value_vars=["explainer_value", "random", "reversed", "margin"],
                    var_name="series", value_name="v")
    long["series"] = long["series"].replace({"explainer_value": "explainer"})
    out = group_intervals(long, [*keys, "series"], "v", n_boot, seed, level)
    return out[out["n_images"] > 0][cols].reset_index(drop=True)


def faithfulness_curves(store: Store, model_ids: Sequence[str], image_id: str, task: str, target_id: int,
                        metric: str = "irof", variant: str | None = None, layer: str | None = None,
                        explainer: str = "gradcam") -> pd.DataFrame:
    """Every curve of one target: ``explainer``'s (most and least relevant first, at ``layer``; None = the
    primary layer) and the random orderings, with scores and statuses."""
    variant = variant or default_variant(store, metric)
    layer_sql, layer_args = ("layer_role = 'primary'", []) if layer is None else ("layer_label = ?", [layer])
    return store.df(
        "SELECT model_id, explainer, layer_label, ordering, replicate, seed, curve, x, score, score_norm, "
        "n_steps, clean_score, status, settings_key FROM faithfulness "
        f"WHERE model_id IN ({_in(model_ids)}) AND image_id = ? AND task = ? AND target_id = ? AND metric = ? "
        f"AND variant = ? AND (ordering = 'random' OR (explainer = ? AND {layer_sql})) "
        "ORDER BY model_id, ordering, replicate",
        [*model_ids, image_id, task, int(target_id), metric, variant, explainer, *layer_args])


def settings_of(store: Store, metric: str, variant: str | None = None) -> dict[str, Any]:
    """The recorded settings of one metric variant (one row's JSON: the same for every row of the variant)."""
    import json

    variant = variant or default_variant(store, metric)
    rows = store.rows("SELECT settings FROM faithfulness WHERE metric = ? AND variant = ? LIMIT 1",
                      [metric, variant])
    return json.loads(rows[0][0]) if rows else {}
