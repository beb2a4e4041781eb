"""What precompute reads back from its own store: superpixels, the dense model's maps and targets of a batch."""

from __future__ import annotations

import duckdb
import numpy as np

from mtlx_core.explain.superpixels import SlicSettings, Superpixels
from mtlx_core.precompute.units import Batch
from mtlx_core.store.codec import decode_array

Wanted = dict[tuple[int, str], set[int]]  # (image index in the batch, task) -> target ids


def stored_superpixels(con: duckdb.DuckDBPyConnection, b: Batch, skey: str, slic: SlicSettings) -> list[Superpixels]:
    got = {iid: (n, decode_array(lab)) for iid, n, lab in con.execute(
        "SELECT image_id, n_segments, labels FROM superpixels WHERE settings_key = ? "
        "AND list_contains(?, image_id)", [skey, b.image_ids]).fetchall()}
    missing = [i for i in b.image_ids if i not in got]
    if missing:
        raise RuntimeError(f"superpixels of images {missing} are missing from the store (images unit not run?)")
    return [Superpixels(got[i][1].astype(np.int64), int(got[i][0]), slic) for i in b.image_ids]


def dense_maps(con: duckdb.DuckDBPyConnection, dense_id: str, b: Batch, done: dict[str, str | None]
               ) -> dict[tuple[str, str, int], np.ndarray]:
    """The dense model's primary-layer Grad-CAM maps of the batch ``{(image_id, task, target_id): map}``."""
    if f"explain:{dense_id}:{b.key}" not in done:
        raise RuntimeError(f"the dense model {dense_id} has not been explained on batch {b.key} yet")
    rows = con.execute(
        "SELECT image_id, task, target_id, saliency FROM explanations WHERE model_id = ? "
        "AND layer_role = 'primary' AND explainer = 'gradcam' AND list_contains(?, image_id)",
        [dense_id, b.image_ids]).fetchall()
    return {(iid, task, int(tid)): decode_array(sal) for iid, task, tid, sal in rows}


def wanted_targets(con: duckdb.DuckDBPyConnection, dense_id: str, b: Batch) -> Wanted:
    """The dense model's drawn targets on the batch's images (``target_draws``)."""
    return _group(b, con.execute(
        "SELECT image_id, task, target_id FROM target_draws WHERE model_id = ? AND drawn "
        "AND list_contains(?, image_id)", [dense_id, b.image_ids]).fetchall())


def explained_targets(con: duckdb.DuckDBPyConnection, model_id: str, b: Batch) -> Wanted:
    """The targets the model's primary unit explained on the batch (the ablation layers explain these)."""
    return _group(b, con.execute(
        "SELECT image_id, task, target_id FROM explanations WHERE model_id = ? AND layer_role = 'primary' "
        "AND explainer = 'gradcam' AND list_contains(?, image_id)", [model_id, b.image_ids]).fetchall())


def _group(b: Batch, rows: list[tuple]) -> Wanted:
    wanted: Wanted = {}
    for iid, task, tid in rows:
        wanted.setdefault((b.image_ids.index(iid), task), set()).add(int(tid))
    return wanted
