"""Map similarity across a study: how far each pruned model's explanations moved from its dense model's, against
how far two training seeds of the dense model differ anyway (the noise floor, issue 18).

Rows of ``similarity`` whose ``reference_id`` is the model's parent (``models.parent_id``) are pruning (or
control) comparisons; rows whose model is a dense model and whose reference is another dense model of the same arm
are seed comparisons (``mtlx_core.precompute.seed_noise``). Both are averaged per image over its targets, then
summarised over images with a percentile bootstrap interval (``aggregate.group_intervals``). Similarity
is only stored at the primary layers.

Public API::

    similarity_vs_sparsity(store, "spearman")   # arm_id, model_id, role, seed, sparsity, target_sparsity, task,
                                                # mean, ci_low, ci_high, n_images
    seed_noise(store, "spearman")               # arm_id, task, mean, ci_low, ci_high, n_images, n_pairs
"""

from __future__ import annotations

import pandas as pd

from mtlx_core.store.aggregate import N_BOOT, group_intervals
from mtlx_core.store.reader import Store

SIMILARITY_MEASURES: tuple[str, ...] = ("spearman", "ssim", "topk_iou")


def _check(measure: str) -> None:
    if measure not in SIMILARITY_MEASURES:
        raise ValueError(f"unknown similarity measure {measure!r}; valid measures: {', '.join(SIMILARITY_MEASURES)}")


def _per_image(store: Store, measure: str, seeds: bool) -> pd.DataFrame:
    """Per (model, reference, image, task): the mean over the image's targets at the primary layer."""
    relation = ("m.parent_id IS NULL AND r.parent_id IS NULL AND m.arm_id = r.arm_id" if seeds
                else "m.parent_id = s.reference_id")
    return store.df(
        f"SELECT m.arm_id, s.model_id, s.reference_id, coalesce(m.seed, 0) AS seed, "
        "coalesce(m.achieved_sparsity, m.target_sparsity, 0) AS sparsity, coalesce(m.target_sparsity, 0) "
        "AS target_sparsity, CASE WHEN m.pruning_method = 'control' THEN 'control' ELSE 'pruned' END AS role, "
        f"s.task, s.image_id, avg(s.{measure}) AS v FROM similarity s JOIN models m USING (model_id) "
        "JOIN models r ON r.model_id = s.reference_id "
        f"WHERE {relation} GROUP BY ALL ORDER BY m.arm_id, sparsity, s.model_id, s.task, s.image_id")


def similarity_vs_sparsity(store: Store, measure: str = "spearman", n_boot: int = N_BOOT,
                           seed: int = 0) -> pd.DataFrame:
    """Per pruned (or control) model and task: the mean similarity of its maps to its dense model's."""
    _check(measure)
    keys = ["arm_id", "model_id", "role", "seed", "sparsity", "target_sparsity", "task"]
    per = _per_image(store, measure, seeds=False)
    if per.empty:
        return pd.DataFrame(columns=[*keys, "mean", "ci_low", "ci_high", "n_images"])
    return group_intervals(per, keys, "v", n_boot, seed)


def seed_noise(store: Store, measure: str = "spearman", n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per arm and task: the mean similarity of another seed's dense maps to the first seed's (every seed pair
    pooled, images averaged over pairs first), with its interval; empty without replicates."""
    _check(measure)
    cols = ["arm_id", "task", "mean", "ci_low", "ci_high", "n_images", "n_pairs"]
    per = _per_image(store, measure, seeds=True)
    if per.empty:
        return pd.DataFrame(columns=cols)
    pairs = per.groupby(["arm_id", "task"])["model_id"].nunique().rename("n_pairs").reset_index()
    per = per.groupby(["arm_id", "task", "image_id"], as_index=False)["v"].mean()
    out = group_intervals(per, ["arm_id", "task"], "v", n_boot, seed).merge(pairs, on=["arm_id", "task"])
    return out[cols]
