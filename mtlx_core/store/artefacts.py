"""Per-image artefacts of the study store: images, targets, layers, maps, predictions, superpixels, curves.

Re-exported by ``mtlx_core.store.query`` (the app's one door to the store); see its docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mtlx_core.store.codec import decode_array, decode_png
from mtlx_core.store.reader import Store


def _in(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values) or "NULL"


# --- images and per-image artefacts ----------------------------------------------------------------------


def images(store: Store) -> pd.DataFrame:
    """The evaluated images without their pixels."""
    return store.df("SELECT image_id, dataset, split, idx, height, width FROM images ORDER BY dataset, split, idx")


def image_png(store: Store, image_ids: Sequence[str]) -> dict[str, bytes]:
    """PNG bytes of the given images (what ``st.image`` shows without decoding)."""
    rows = store.rows(f"SELECT image_id, image FROM images WHERE image_id IN ({_in(image_ids)})", image_ids)
    return {i: bytes(b) for i, b in rows}


def image(store: Store, image_id: str) -> np.ndarray:
    """One image as ``H x W x 3`` uint8."""
    png = image_png(store, [image_id])
    if image_id not in png:
        raise KeyError(f"no image {image_id!r} in the store")
    return decode_png(png[image_id])


def model_images(store: Store, model_id: str) -> pd.DataFrame:
    """Images explained for a model, with how many targets each task has."""
    return store.df("SELECT e.image_id, e.task, count(*) AS n_targets, any_value(i.idx) AS idx "
                    "FROM explanations e JOIN images i USING (image_id) WHERE e.model_id = ? "
                    "AND e.layer_role = 'primary' AND e.explainer = 'gradcam' "
                    "GROUP BY e.image_id, e.task ORDER BY idx, e.task", [model_id])


def targets(store: Store, image_id: str, task: str, model_ids: Sequence[str]) -> pd.DataFrame:
    """``target_id``, ``target`` (name) and how many of ``model_ids`` explain it on this image."""
    return store.df(
        "SELECT target_id, any_value(target) AS target, count(DISTINCT model_id) AS n_models, "
        "bool_or(is_zero) AS any_zero FROM explanations "
        "WHERE image_id = ? AND task = ? AND layer_role = 'primary' AND explainer = 'gradcam' "
        f"AND model_id IN ({_in(model_ids)}) "
        "GROUP BY target_id ORDER BY target_id",
        [image_id, task, *model_ids])


def layers(store: Store, model_ids: Sequence[str] | str | None = None, task: str | None = None) -> pd.DataFrame:
    """Grad-CAM layers stored (for the given models; for one task, whose primary layer may differ from another
    task's): ``layer_label``, ``layer_role`` (``primary`` first, then the ablation layers by label), how many of
    the models have each, and the module paths."""
    ids = [model_ids] if isinstance(model_ids, str) else model_ids
    conds = ([f"model_id IN ({_in(ids)})"] if ids is not None else []) + (["task = ?"] if task is not None else [])
    where = ("WHERE " + " AND ".join(conds)) if conds else ""
    args = [*(ids or []), *([task] if task is not None else [])]
    return store.df("SELECT * FROM (SELECT layer_label, CASE WHEN bool_or(layer_role = 'primary') THEN 'primary' "
                    "ELSE 'ablation' END AS role, count(DISTINCT model_id) AS n_models, "
                    f"string_agg(DISTINCT layer, ', ') AS modules FROM explanations {where} GROUP BY layer_label) "
                    "ORDER BY role <> 'primary', layer_label", args).rename(columns={"role": "layer_role"})


def _layer_sql(layer: str | None) -> tuple[str, list[str]]:
    """SQL filter of one layer: a stored label, or ``None`` for each model's primary layer."""
    return ("AND layer_label = ?", [layer]) if layer is not None else ("AND layer_role = 'primary'", [])


def saliency_maps(store: Store, model_ids: Sequence[str], image_id: str, task: str, target_id: int,
                  layer: str | None = None, explainer: str = "gradcam") -> dict[str, np.ndarray]:
    """Input-resolution map ``(H, W)`` of ``explainer`` per model that has one, at the layer with this label
    (``None``: each model's primary layer)."""
    layer_sql, layer_args = _layer_sql(layer)
    rows = store.rows(
        f"SELECT model_id, saliency FROM explanations WHERE image_id = ? AND task = ? "
        f"AND target_id = ? AND explainer = ? AND model_id IN ({_in(model_ids)}) {layer_sql}",
        [image_id, task, int(target_id), explainer, *model_ids, *layer_args])
    return {m: decode_array(b).astype(np.float32) for m, b in rows}


def explainers(store: Store, model_ids: Sequence[str] | None = None, image_id: str | None = None,
               task: str | None = None, target_id: int | None = None, layer: str | None = None) -> pd.DataFrame:
    """Explainers stored (for the given models; with ``image_id``, ``task``, ``target_id``: those with a map of that
    target) at the layer with this label (``None``: the primary layer): ``explainer`` (Grad-CAM first, then by
    name), ``n_models`` and ``models`` (the model ids that have it, sorted)."""
    layer_sql, layer_args = _layer_sql(layer)
    args: list[Any] = list(layer_args)
    for column, value in (("image_id", image_id), ("task", task), ("target_id", target_id)):
        if value is not None:
            layer_sql += f" AND {column} = ?"
            args.append(int(value) if column == "target_id" else value)
    if model_ids is not None:
        layer_sql += f" AND model_id IN ({_in(model_ids)})"
        args += list(model_ids)
    return store.df("SELECT explainer, count(DISTINCT model_id) AS n_models, list(DISTINCT model_id ORDER BY model_id) "
                    f"AS models FROM explanations WHERE true {layer_sql} GROUP BY explainer "
                    "ORDER BY explainer <> 'gradcam', explainer", args)


def predictions(store: Store, model_ids: Sequence[str], image_id: str, task: str) -> dict[str, np.ndarray]:
    """Each model's clean prediction of ``task`` on the image, as the task stores it (``Task.stored_prediction``:
    labels ``(H, W)``, depth ``(H, W)``, normals ``(3, H, W)``; a plugin task's by its display kind)."""
    rows = store.rows(f"SELECT model_id, prediction FROM predictions WHERE image_id = ? AND task = ? "
                      f"AND model_id IN ({_in(model_ids)})", [image_id, task, *model_ids])
    return {m: decode_array(b) for m, b in rows}


def superpixels(store: Store, image_id: str, settings_key: str | None = None) -> np.ndarray:
    """SLIC labels ``(H, W)`` of an image (the given settings, else the first stored)."""
    sql = "SELECT labels FROM superpixels WHERE image_id = ?" + (" AND settings_key = ?" if settings_key else "")
    rows = store.rows(sql + " ORDER BY settings_key LIMIT 1", [image_id, *([settings_key] if settings_key else [])])
    if not rows:
        raise KeyError(f"no superpixels stored for image {image_id!r}")
    return decode_array(rows[0][0]).astype(np.int64)


def similarity(store: Store, model_ids: Sequence[str], image_id: str, task: str, target_id: int) -> pd.DataFrame:
    """Stored similarity of each model's map to its reference (the dense model's map)."""
    return store.df(
        "SELECT model_id, reference_id, layer, spearman, ssim, topk_iou, topk FROM similarity "
        f"WHERE image_id = ? AND task = ? AND target_id = ? AND model_id IN ({_in(model_ids)}) ORDER BY model_id",
        [image_id, task, int(target_id), *model_ids])


def target_draws(store: Store, model_id: str | None = None) -> pd.DataFrame:
    """The dense models' candidate targets per image and task, whether each was drawn, and the draw's rule."""
    where = "WHERE t.model_id = ?" if model_id is not None else ""
    return store.df("SELECT t.model_id, t.image_id, i.idx, t.position, t.task, t.target_id, t.target, t.n_pixels, "
                    "t.drawn, t.rule, t.k, t.seed FROM target_draws t LEFT JOIN images i USING (image_id) "
                    f"{where} ORDER BY t.model_id, t.position, t.task, t.target_id",
                    [model_id] if model_id is not None else [])
