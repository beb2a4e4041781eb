"""Cross-task similarity (issue 21's multi-task check): how alike the explanations of a model's different tasks are
on the same image, and how that moves with sparsity. Computed from the stored maps alone (no precompute).

Definition
- The maps: the primary-layer Grad-CAM maps at input resolution (``explanations`` rows with
  ``layer_role = 'primary'`` and ``explainer = 'gradcam'``).
- A task's map on an image = the mean of its explained targets' maps, each min-max normalised to [0, 1] first.
  Tasks have different numbers of targets (a few drawn classes, depth bins, normal octants), so each target weighs
  the same whatever its own range, and the mean (not the sum) puts every task on the same [0, 1] scale whatever
  its target count; a task with one target uses that map (normalised: the same ranks). A constant (all-zero) map
  normalises to zeros; it changes neither measure (it scales the mean, ranks stay the same).
- Cross-task similarity of a task pair on an image: the Spearman rank correlation of the two task maps' pixels
  and their top-k IoU (the k = round(topk x pixels) highest pixels, ties to the lower index; ``topk`` is the
  store's: ``similarity.topk``, else the build's settings, else 0.2), as in ``mtlx_core.explain.similarity``. Both
  are NaN when either task map is constant (every target map of the task all zero: no saliency to compare), and
  such images drop out of the means and the paired tests.
- Per model and task pair: the mean over images with a 95 % percentile bootstrap interval over images
  (``aggregate.group_intervals``).
- How it moves with sparsity: per arm and task pair, the dense model (sparsity 0), each pruned level and the
  training-budget control (x = achieved sparsity). Each pruned or control model against its dense model
  (``parent_id``: the dense model it descends from, also for a level pruned from the previous one): the mean
  per-image change (model minus dense on the same images) with its bootstrap interval, the
  two-sided Wilcoxon signed-rank p-value over images (``stats.effects.wilcoxon_p``) and Holm's correction over the
  arm's levels (one family per arm, dense model and task pair; ``stats.trend.adjust_within``). ``change`` says it in
  words: ``more alike`` / ``less alike`` (Holm-adjusted p < 0.05) or ``no significant change``.

Public API::

    cross_task_per_image(store)                 # model_id, image_id, task_a, task_b, spearman, topk_iou, n_targets_*
    cross_task_vs_sparsity(store, "spearman")   # arm_id, model_id, parent_id, role, seed, sparsity, target_sparsity,
                                                # task_a, task_b, mean, ci_low, ci_high, n_images, dense_mean, delta,
                                                # delta_low, delta_high, n_paired, p, p_holm, change
    task_map(maps); pair_similarity(a, b, topk); store_topk(store)

The per-image values are computed once per store snapshot and ``topk`` (a small in-process cache; the app also
caches every view per snapshot).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from mtlx_core.stats.effects import ALPHA, wilcoxon_p
from mtlx_core.stats.trend import adjust_within
from mtlx_core.store.aggregate import N_BOOT, group_intervals, mean_interval
from mtlx_core.store.codec import decode_array
from mtlx_core.store.reader import Store

logger = logging.getLogger(__name__)

CROSS_TASK_MEASURES: tuple[str, ...] = ("spearman", "topk_iou")
DEFAULT_TOPK = 0.2  # ExplainSettings.topk's default, for a store that records none
CHUNK_IMAGES = 16  # images decoded at once (keeps memory flat on stores with large maps)
_CACHE_SIZE = 4
_cache: dict[tuple[str, str, float], pd.DataFrame] = {}
PER_IMAGE_COLUMNS = ["model_id", "image_id", "task_a", "task_b", "spearman", "topk_iou", "n_targets_a",
                     "n_targets_b"]
KEYS = ["arm_id", "model_id", "parent_id", "role", "seed", "sparsity", "target_sparsity", "task_a", "task_b"]
COLUMNS = [*KEYS, "mean", "ci_low", "ci_high", "n_images", "dense_mean", "delta", "delta_low", "delta_high",
           "n_paired", "p", "p_holm", "change"]


def _check(measure: str) -> None:
    if measure not in CROSS_TASK_MEASURES:
        raise ValueError(f"unknown cross-task measure {measure!r}; valid measures: {', '.join(CROSS_TASK_MEASURES)}")


def task_map(maps: Sequence[np.ndarray]) -> np.ndarray:
    """The task's map: the mean of ``maps`` (one per explained target, same shape), each min-max normalised to
    [0, 1] first (a constant map becomes zeros)."""
    if not maps:
        raise ValueError("a task map needs at least one target map")
    out = np.zeros(np.shape(maps[0]), dtype=np.float64)
    for m in maps:
        a = np.asarray(m, dtype=np.float64)
        if a.shape != out.shape:
            raise ValueError(f"target maps differ in shape: {a.shape} vs {out.shape}")
        lo, hi = float(a.min()), float(a.max())
        if hi > lo:
            out += (a - lo) / (hi - lo)
    return out / len(maps)


def _top_set(x: np.ndarray, k: int) -> np.ndarray:
    """The indices ``similarity.top_k(x, k)`` returns (the ``k`` largest, ties to the lower index), sorted, in
    linear time: everything above the k-th largest value, then the lowest indices equal to it."""
    kth = np.partition(x, x.size - k)[x.size - k]
    above = np.flatnonzero(x > kth)
    return np.union1d(above, np.flatnonzero(x == kth)[:k - above.size])


class _TaskMap:
    """What the measures need of one task map, computed once for all its pairs: average ranks, top-k pixels."""

    def __init__(self, m: np.ndarray, topk: float) -> None:
        x = m.ravel()
        self.shape = m.shape
        self.constant = bool(x.max() == x.min())
        self.ranks = rankdata(x) if not self.constant else x
        self.k = max(1, round(topk * x.size))
        self.top = _top_set(x, self.k)

    def compare(self, other: _TaskMap) -> tuple[float, float]:
        """Spearman = Pearson correlation of the average ranks (scipy's definition) and top-k IoU; both NaN when
        either map is constant."""
        if self.constant or other.constant:
            return math.nan, math.nan
        rho = float(np.corrcoef(self.ranks, other.ranks)[0, 1])
        inter = len(np.intersect1d(self.top, other.top, assume_unique=True))
        return rho, inter / (2 * self.k - inter)


def pair_similarity(a: np.ndarray, b: np.ndarray, topk: float) -> tuple[float, float]:
    """(Spearman rank correlation, top-k IoU) of two task maps of the same shape (``explain.similarity``'s
    definitions); both NaN when either map is constant."""
    if a.shape != b.shape:
        raise ValueError(f"task maps differ in shape: {a.shape} vs {b.shape}")
    if not 0.0 < topk <= 1.0:
        raise ValueError(f"topk must be a fraction in (0, 1], got {topk}")
    return _TaskMap(np.asarray(a, np.float64), topk).compare(_TaskMap(np.asarray(b, np.float64), topk))


def store_topk(store: Store) -> float:
    """The top-k fraction the store's similarity rows use, else the build's ``settings.topk``, else 0.2."""
    rows = store.rows("SELECT topk FROM similarity WHERE topk IS NOT NULL GROUP BY topk ORDER BY count(*) DESC, "
                      "topk LIMIT 1")
    if rows:
        return float(rows[0][0])
    meta = store.rows("SELECT value FROM meta WHERE key = 'settings'")
    try:
        topk = json.loads(meta[0][0]).get("topk") if meta and meta[0][0] else None
    except (json.JSONDecodeError, AttributeError):
        topk = None
    return float(topk) if isinstance(topk, int | float) else DEFAULT_TOPK


def _image_rows(model_id: str, image_id: str, g: pd.DataFrame, topk: float) -> list[tuple]:
    maps: dict[str, list[np.ndarray]] = {}
    for task, blob in zip(g["task"], g["saliency"], strict=True):
        maps.setdefault(str(task), []).append(decode_array(bytes(blob)))
    tasks = {t: _TaskMap(task_map(m), topk) for t, m in sorted(maps.items())}
    rows = []
    for ta, tb in combinations(tasks, 2):
        if tasks[ta].shape != tasks[tb].shape:
            logger.warning("model %s image %s: %s and %s maps differ in shape; pair left out", model_id, image_id,
                           ta, tb)
            continue
        rho, iou = tasks[ta].compare(tasks[tb])
        rows.append((model_id, image_id, ta, tb, rho, iou, len(maps[ta]), len(maps[tb])))
    return rows


def _compute_per_image(store: Store, topk: float) -> pd.DataFrame:
    where = "explainer = 'gradcam' AND layer_role = 'primary' AND saliency IS NOT NULL"
    index = store.df(f"SELECT DISTINCT model_id, image_id FROM explanations WHERE {where} ORDER BY ALL")
    rows: list[tuple] = []
    for model_id, g in index.groupby("model_id", sort=True):
        ids = g["image_id"].tolist()
        for start in range(0, len(ids), CHUNK_IMAGES):
            chunk = ids[start:start + CHUNK_IMAGES]
            maps = store.df(f"SELECT image_id, task, target_id, saliency FROM explanations WHERE {where} AND "
                            f"model_id = ? AND image_id IN ({', '.join('?' * len(chunk))}) "
                            "ORDER BY image_id, task, target_id",  # not ORDER BY ALL: sorting the blobs is slow
                            [model_id, *chunk])
            for image_id, gi in maps.groupby("image_id", sort=True):
                rows += _image_rows(str(model_id), str(image_id), gi, topk)
    return pd.DataFrame(rows, columns=PER_IMAGE_COLUMNS)


def cross_task_per_image(store: Store, topk: float | None = None) -> pd.DataFrame:
    """Per model, image and task pair (``task_a`` < ``task_b``): Spearman and top-k IoU of the two task maps,
    with each task's number of targets. Cached per store snapshot and ``topk`` (a new snapshot recomputes)."""
    topk = store_topk(store) if topk is None else float(topk)
    key = (str(store.path), store.signature, topk)
    if key not in _cache:
        if len(_cache) >= _CACHE_SIZE:
            _cache.pop(next(iter(_cache)))
        _cache[key] = _compute_per_image(store, topk)
    return _cache[key].copy()


def _points(store: Store) -> pd.DataFrame:
    """(arm_id, model_id, parent_id, role, seed, sparsity, target_sparsity) of each arm's dense model(s), pruned
    levels and controls: an arm holds the models with its ``arm_id``, its ``dense_model_id`` and their parents."""
    models = store.df("SELECT model_id, arm_id, parent_id, pruning_method, coalesce(seed, 0) AS seed, "
                      "coalesce(achieved_sparsity, target_sparsity, 0) AS achieved, "
                      "coalesce(target_sparsity, 0) AS target_sparsity FROM models")
    dense_of = dict(store.rows("SELECT arm_id, dense_model_id FROM arms"))
    arm_ids = list(dict.fromkeys([*dense_of, *models["arm_id"].dropna()]))
    members = [(arm, mid) for arm in arm_ids for mid in models.loc[models["arm_id"] == arm, "model_id"]]
    for arm in arm_ids:
        parents = models.loc[(models["arm_id"] == arm) & models["parent_id"].notna(), "parent_id"]
        members += [(arm, mid) for mid in [dense_of.get(arm), *parents] if mid is not None]
    pts = pd.DataFrame(members, columns=["arm_id", "model_id"]).drop_duplicates()
    pts = pts.merge(models.drop(columns="arm_id"), on="model_id")
    dense = pts["parent_id"].isna()
    pts["role"] = np.where(dense, "dense", np.where(pts["pruning_method"] == "control", "control", "pruned"))
    pts["sparsity"] = np.where(dense, 0.0, pts["achieved"].astype(np.float64))
    # a level pruned from the previous one (HRank's rounds) is compared with the dense model it descends from
    parent_of = dict(zip(models["model_id"], models["parent_id"], strict=True))
    pts["parent_id"] = [None if isinstance(p, float) or p is None else _root(p, parent_of) for p in pts["parent_id"]]
    return pts[["arm_id", "model_id", "parent_id", "role", "seed", "sparsity", "target_sparsity"]]


def _root(model_id: str, parent_of: dict[str, object]) -> str:
    """The dense model ``model_id`` descends from (its parents followed until one has none)."""
    seen = {model_id}
    while isinstance(parent_of.get(model_id), str) and parent_of[model_id] not in seen:
        model_id = str(parent_of[model_id])
        seen.add(model_id)
    return model_id


def _change(r: pd.Series) -> str:
    if r["role"] == "dense":
        return ""
    if math.isfinite(r["p_holm"]) and r["p_holm"] < ALPHA and r["delta"] != 0:
        return "more alike" if r["delta"] > 0 else "less alike"
    return "no significant change"


def cross_task_vs_sparsity(store: Store, measure: str = "spearman", n_boot: int = N_BOOT, seed: int = 0,
                           topk: float | None = None) -> pd.DataFrame:
    """Per arm, model (dense, pruned, control) and task pair: the mean cross-task similarity over images with its
    interval, and for a pruned or control model its change from its dense model (paired over images, Wilcoxon,
    Holm over the arm's levels). Ordered by arm, task pair, dense first, then sparsity."""
    _check(measure)
    per = cross_task_per_image(store, topk)
    if per.empty:
        return pd.DataFrame(columns=COLUMNS)
    pts = _points(store)
    data = pts.merge(per[["model_id", "image_id", "task_a", "task_b", measure]], on="model_id")
    if data.empty:
        return pd.DataFrame(columns=COLUMNS)
    out = group_intervals(data.astype({"parent_id": object}), KEYS, measure, n_boot, seed)
    wide = per.pivot_table(index=["model_id", "task_a", "task_b"], columns="image_id", values=measure,
                           aggfunc="first")
    stats = []
    for r in out.itertuples(index=False):
        if r.role == "dense" or any((m, r.task_a, r.task_b) not in wide.index for m in (r.parent_id, r.model_id)):
            stats.append((math.nan, math.nan, math.nan, math.nan, 0, math.nan))
            continue
        ref = wide.loc[(r.parent_id, r.task_a, r.task_b)]
        mine = wide.loc[(r.model_id, r.task_a, r.task_b)]
        diff = (mine - ref).to_numpy(np.float64)
        diff = diff[np.isfinite(diff)]
        dense_mean = float(np.nanmean(ref.to_numpy(np.float64))) if ref.notna().any() else math.nan
        d, lo, hi = mean_interval(diff, n_boot, seed)
        stats.append((dense_mean, d, lo, hi, int(diff.size), wilcoxon_p(diff)))
    out[["dense_mean", "delta", "delta_low", "delta_high", "n_paired", "p"]] = pd.DataFrame(stats, index=out.index)
    out["n_paired"] = out["n_paired"].astype(int)
    out["p_holm"] = adjust_within(out, ["arm_id", "parent_id", "task_a", "task_b"], "p", "holm")
    out["change"] = [_change(r) for _, r in out.iterrows()]
    order = out["role"].map({"dense": 0, "pruned": 1, "control": 2})
    out = out.assign(_o=order).sort_values(["arm_id", "task_a", "task_b", "_o", "sparsity", "model_id"])
    return out.drop(columns="_o").reset_index(drop=True)[COLUMNS]
