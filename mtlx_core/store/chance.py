"""Do the explanations beat chance? Per-image margins over the random baseline and their paired tests.

The margin of an image (D24): the explainer's normalised score minus the mean over the K random orderings of the
same target, averaged over the image's targets with status ``ok``, for any metric of the family (default
IROF). A derived metric (AbPC) has chance 0, so its margin is its value. Tests are paired by image
(``mtlx_core.stats.paired``): mean margin, BCa bootstrap 95 % interval, two-sided Wilcoxon signed-rank, Holm
over the family shown.

Re-exported by ``mtlx_core.store.query`` (the app's one door to the store)::

    chance_per_image(store, metric, variant, value)  # per model, task, layer and image: Grad-CAM, random, margin
    beats_chance(store, metric, variant, value)      # per dense model and task at the primary layer: the verdict
    margin_by_layer(store, metric, variant, value)   # per model, task and layer (dense and pruned): the ablation
"""

from __future__ import annotations

import pandas as pd

from mtlx_core.stats.paired import holm, paired_summary
from mtlx_core.store.faith import faithfulness_per_image
from mtlx_core.store.reader import Store

ALPHA = 0.05
MIN_SHARE = 0.2  # issue 16's bar for "clearly": the margin is at least 20 % of the random baseline's score


def chance_per_image(store: Store, metric: str = "irof", variant: str | None = None,
                     value: str = "score_norm", explainer: str = "gradcam") -> pd.DataFrame:
    """One row per (arm point, task, layer, image): the explainer's mean value over the image's targets (column
    ``gradcam`` whichever ``explainer``: the app's name for the explainer's series), the mean of the random
    orderings, the margin (D24) and the number of targets (status ``ok``)."""
    per = faithfulness_per_image(store, metric, variant, value, explainer)
    per = per.rename(columns={"explainer_value": "gradcam"})
    return per[per["random"].notna() | per["margin"].notna()].reset_index(drop=True)


def _summaries(per_image: pd.DataFrame, keys: list[str], n_boot: int, seed: int) -> pd.DataFrame:
    rows = []
    for key, g in per_image.groupby(keys, sort=False, dropna=False):
        s = paired_summary(g["margin"].to_numpy(), n_boot=n_boot, seed=seed)
        random = float(g["random"].mean())
        rows.append({**dict(zip(keys, key, strict=True)), "n_images": s.n, "n_targets": int(g["n_targets"].sum()),
                     "gradcam": float(g["gradcam"].mean()), "random": random, "margin": s.mean,
                     "ci_low": s.ci_low, "ci_high": s.ci_high, "p": s.p,
                     "margin_share": s.mean / random if random else float("nan")})
    return pd.DataFrame(rows, columns=[*keys, "n_images", "n_targets", "gradcam", "random", "margin", "ci_low",
                                       "ci_high", "p", "margin_share"])


def verdict(row: pd.Series | dict, alpha: float = ALPHA, min_share: float = MIN_SHARE) -> str:
    """``clearly beats chance`` / ``beats chance`` (significant, margin under ``min_share`` of random) /
    ``worse than chance`` / ``no better than chance`` (not significant), from a row of :func:`beats_chance`."""
    significant = row["p_holm"] < alpha and (row["ci_low"] > 0 or row["ci_high"] < 0)
    if significant and row["margin"] > 0:
        return "clearly beats chance" if row["margin_share"] >= min_share else "beats chance"
    if significant and row["margin"] < 0:
        return "worse than chance"
    return "no better than chance"


def beats_chance(store: Store, metric: str = "irof", variant: str | None = None, value: str = "score_norm",
                 n_boot: int = 10_000, seed: int = 0, explainer: str = "gradcam") -> pd.DataFrame:
    """Per dense model and task at the primary layer: margin over random, BCa interval, Wilcoxon p, Holm over
    all the dense cells, the margin as a share of the random baseline's score, and a verdict in words."""
    per = chance_per_image(store, metric, variant, value, explainer)
    per = per[per["is_dense"] & (per["layer_role"] == "primary")]
    per = per.drop_duplicates(["model_id", "task", "image_id"])  # a dense model shared by two arms counts once
    out = _summaries(per, ["arm_id", "model_id", "task", "layer_label"], n_boot, seed)
    out["p_holm"] = holm(out["p"].tolist()) if len(out) else []
    out["verdict"] = [verdict(r) for _, r in out.iterrows()]
    return out


def margin_by_layer(store: Store, metric: str = "irof", variant: str | None = None, value: str = "score_norm",
                    n_boot: int = 2_000, seed: int = 0, explainer: str = "gradcam") -> pd.DataFrame:
    """Per (arm point, task, layer), dense and pruned: the margin over random with its interval and p-value;
    Holm within each arm and task (over its models and layers)."""
    per = chance_per_image(store, metric, variant, value, explainer)
    out = _summaries(per, ["arm_id", "model_id", "is_dense", "sparsity", "target_sparsity", "task", "layer_label",
                           "layer_role"], n_boot, seed)
    out["p_holm"] = float("nan")
    for _, idx in out.groupby(["arm_id", "task"]).groups.items():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p"].tolist())
    return out
