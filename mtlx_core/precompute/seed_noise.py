"""The noise floor of map similarity: how far two dense models of the same arm, trained with different seeds,
explain the same targets differently (issue 18).

A pruned model's map is compared with its own dense model's map (``similarity`` rows with ``reference_id`` = the
dense model). With ``--seeds N >= 2`` the dense model of seed k >= 1 is compared the same way with the dense model
of the arm's first seed, on the (image, task, target) triples that both explained at their primary layers: a
pruned model whose maps are as similar to its dense model's as another seed's are has not moved them beyond what
retraining alone does. The rows land in ``similarity`` (``model_id`` = seed k's dense model, ``reference_id`` = the
first seed's); ``mtlx_core.store.similarity_views.seed_noise`` summarises them as the band the app draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

from mtlx_core.explain.similarity import map_similarity
from mtlx_core.store.codec import decode_array
from mtlx_core.version import code_version


def _primary_maps(con: duckdb.DuckDBPyConnection, model_id: str, image_ids: Sequence[str]
                  ) -> dict[tuple[str, str, int], tuple[str, Any]]:
    rows = con.execute("SELECT image_id, task, target_id, layer, saliency FROM explanations WHERE model_id = ? "
                       "AND layer_role = 'primary' AND explainer = 'gradcam' AND list_contains(?, image_id)",
                       [model_id, list(image_ids)])
    return {(iid, task, int(tid)): (layer, sal) for iid, task, tid, layer, sal in rows.fetchall()}


def seed_similarity_rows(con: duckdb.DuckDBPyConnection, model_id: str, reference_id: str,
                         image_ids: Sequence[str], topk: float) -> list[dict[str, Any]]:
    """``similarity`` rows of ``model_id``'s primary maps against ``reference_id``'s on the targets both have.

    Both models must be explained on ``image_ids`` already; triples explained at different layers (a per-seed
    layer override) are skipped: their maps do not answer the same question.
    """
    ours = _primary_maps(con, model_id, image_ids)
    ref = _primary_maps(con, reference_id, image_ids)
    cv, rows = code_version(), []
    for key in sorted(ours.keys() & ref.keys()):
        (layer, sal), (ref_layer, ref_sal) = ours[key], ref[key]
        if layer != ref_layer:
            continue
        s = map_similarity(decode_array(sal), decode_array(ref_sal), topk)
        iid, task, tid = key
        rows.append({"model_id": model_id, "reference_id": reference_id, "image_id": iid, "task": task,
                     "target_id": tid, "layer": layer, "spearman": s.spearman, "ssim": s.ssim,
                     "topk_iou": s.topk_iou, "topk": s.topk, "topk_pixels": s.topk_pixels, "code_version": cv})
    return rows
