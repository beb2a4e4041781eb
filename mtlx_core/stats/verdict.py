"""The verdict per (arm, model, level, task, metric, reference) from paired per-image margins (D24-D25).

Input: one row per (model, reference, seed, image, task, metric) with the columns of ``PAIR_COLUMNS``: the
image's margin over chance for the model and for its reference (``dense`` or ``control``) and the dense model's
(for the share of the dense margin lost). Nothing here reads a store: ``mtlx_core.store.verdict`` builds the input.

Per seed (every model): mean Δ with its BCa paired bootstrap interval, two-sided Wilcoxon, paired TOST against
±δ (δ = ``delta_share`` × |mean reference margin|), share of the dense margin lost, rank-biserial. With several
seeds for a cell (arm, level, task, metric, reference) a pooled row is added: Δ paired within each seed, pooled
over seeds (the mean over present (seed, image) pairs), hierarchical bootstrap interval (seeds, then images),
Wilcoxon and TOST on the per-image means over seeds. The primary row of a cell is the pooled one when there is
one, else the single seed's. Holm within each arm × task × metric × reference family over its levels
(per seed for the seed rows of a pooled study), Benjamini-Hochberg across the study's primary rows (and across
the seed rows), then the rule of ``effects.decide``.

Public API::

    VerdictSettings(alpha=0.05, delta_share=0.1, n_boot=10_000, seed=0, level=0.95)
    verdict_table(pairs, settings)          # one row per cell and seed (+ pooled rows): the VERDICT_COLUMNS and more
    trend_table(pairs)                      # Page's test over levels per arm x task x metric x reference (x seed)
    slope_table(cells, perf)                # slope of mean delta on delta task metric across models
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mtlx_core.stats.effects import decide, rank_biserial, share_lost, tost_p, wilcoxon_p
from mtlx_core.stats.intervals import bca_paired, hierarchical
from mtlx_core.stats.trend import adjust, adjust_within, page_trend, slope

PAIR_COLUMNS: tuple[str, ...] = ("arm_id", "model_id", "model_role", "reference", "reference_id", "level", "task",
                                 "metric", "seed", "image_id", "margin_model", "margin_reference", "margin_dense")
VERDICT_COLUMNS: tuple[str, ...] = (
    "arm", "model_id", "level", "task", "metric", "reference", "n_images", "n_seeds", "mean_delta", "ci_low",
    "ci_high", "p_wilcoxon", "p_holm", "q_bh", "p_tost", "margin", "share_of_margin_lost", "targets_dropped",
    "zero_maps", "verdict")
CELL: list[str] = ["arm_id", "level", "task", "metric", "reference"]
FAMILY: list[str] = ["arm_id", "task", "metric", "reference"]
POOLED = -1  # the ``seed`` of a pooled row


@dataclass(frozen=True)
class VerdictSettings:
    """How the verdict is computed (recorded in the report's manifest)."""

    alpha: float = 0.05
    delta_share: float = 0.1  # the TOST margin: this share of |mean reference margin|
    n_boot: int = 10_000
    seed: int = 0
    level: float = 0.95

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1 or not 0 < self.level < 1:
            raise ValueError(f"VerdictSettings: alpha {self.alpha} and level {self.level} must be in (0, 1)")
        if self.delta_share <= 0 or self.n_boot < 100:
            raise ValueError(f"VerdictSettings: delta_share must be > 0 (got {self.delta_share}) and n_boot >= 100 "
                             f"(got {self.n_boot})")

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def check_pairs(pairs: pd.DataFrame) -> None:
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"paired per-image frame lacks columns {missing}; expected {list(PAIR_COLUMNS)}")


def _row(key: dict, model: np.ndarray, ref: np.ndarray, dense: np.ndarray, s: VerdictSettings) -> dict:
    d = model - ref
    mean_ref = float(ref.mean())
    delta = s.delta_share * abs(mean_ref)
    return {**key, "n_images": int(d.size), "mean_delta": float(d.mean()), "p_wilcoxon": wilcoxon_p(d),
            "p_tost": tost_p(model, ref, delta), "margin": delta, "rank_biserial": rank_biserial(d),
            "mean_margin_model": float(model.mean()), "mean_margin_reference": mean_ref,
            "mean_margin_dense": float(np.nanmean(dense)) if np.isfinite(dense).any() else math.nan,
            "share_of_margin_lost": share_lost(float(d.mean()), float(np.nanmean(dense))
                                               if np.isfinite(dense).any() else math.nan)}


def _seed_rows(pairs: pd.DataFrame, s: VerdictSettings) -> pd.DataFrame:
    keys = [*CELL, "seed", "model_id", "model_role", "reference_id"]
    rows, arrays = [], []
    for key, g in pairs.groupby(keys, sort=False, dropna=False):
        m, r = g["margin_model"].to_numpy(np.float64), g["margin_reference"].to_numpy(np.float64)
        rows.append(_row(dict(zip(keys, key, strict=True)), m, r, g["margin_dense"].to_numpy(np.float64), s))
        arrays.append((m, r))
    out = pd.DataFrame(rows)
    out["ci_low"], out["ci_high"] = math.nan, math.nan
    by_n: dict[int, list[int]] = {}
    for i, (m, _) in enumerate(arrays):
        by_n.setdefault(m.size, []).append(i)
    for idx in by_n.values():  # one scipy call per sample size: the rows share the resampled indices
        lo, hi = bca_paired(np.stack([arrays[i][0] for i in idx]), np.stack([arrays[i][1] for i in idx]),
                            s.n_boot, s.seed, s.level)
        out.loc[idx, "ci_low"], out.loc[idx, "ci_high"] = lo, hi
    out["n_seeds"] = 1
    out["ci_method"] = "bca"
    return out


def _pooled_rows(pairs: pd.DataFrame, s: VerdictSettings) -> pd.DataFrame:
    rows = []
    for key, g in pairs.groupby(CELL, sort=False, dropna=False):
        seeds = sorted(g["seed"].unique())
        if len(seeds) < 2:
            continue
        wide = g.pivot_table(index="seed", columns="image_id", values=["margin_model", "margin_reference"],
                             aggfunc="mean")
        D = (wide["margin_model"] - wide["margin_reference"]).reindex(seeds).to_numpy(np.float64)
        per_image = g.groupby("image_id")[["margin_model", "margin_reference", "margin_dense"]].mean()
        m, r = per_image["margin_model"].to_numpy(), per_image["margin_reference"].to_numpy()
        ids = g.drop_duplicates("seed").sort_values("seed")
        row = _row(dict(zip(CELL, key, strict=True)), m, r, per_image["margin_dense"].to_numpy(), s)
        mean, lo, hi = hierarchical(D, s.n_boot, s.seed, s.level)
        row.update({"mean_delta": mean, "ci_low": lo, "ci_high": hi, "n_seeds": len(seeds), "seed": POOLED,
                    "model_id": ";".join(ids["model_id"]), "model_role": ids["model_role"].iloc[0],
                    "reference_id": ";".join(ids["reference_id"]), "ci_method": "hierarchical",
                    "share_of_margin_lost": share_lost(mean, row["mean_margin_dense"])})
        rows.append(row)
    return pd.DataFrame(rows)


def verdict_table(pairs: pd.DataFrame, settings: VerdictSettings | None = None) -> pd.DataFrame:
    """Every cell's statistics and verdict (see the module docstring); ``primary`` marks the rows that carry a
    cell's verdict (pooled when the cell has several seeds). Sorted by arm, reference, task, metric, level."""
    s = settings or VerdictSettings()
    check_pairs(pairs)
    # as floats: margins that are all missing (every map of a model all zero) come as objects (None)
    finite = np.isfinite(pairs["margin_model"].astype(float)) & np.isfinite(pairs["margin_reference"].astype(float))
    pairs = pairs[finite]
    if pairs.empty:
        return pd.DataFrame(columns=[*VERDICT_COLUMNS, "arm_id", "seed", "primary"])
    seeds = _seed_rows(pairs, s)
    pooled = _pooled_rows(pairs, s)
    multi = set(map(tuple, pooled[CELL].to_numpy().tolist())) if not pooled.empty else set()
    seeds["primary"] = [tuple(k) not in multi for k in seeds[CELL].to_numpy().tolist()]
    pooled["primary"] = True
    out = pd.concat([seeds, pooled], ignore_index=True) if not pooled.empty else seeds
    out["p_holm"], out["q_bh"] = math.nan, math.nan
    for primary, fam in ((True, FAMILY), (False, [*FAMILY, "seed"])):
        part = out[out["primary"] == primary]
        if part.empty:
            continue
        out.loc[part.index, "p_holm"] = adjust_within(part, fam, "p_wilcoxon", "holm")
        out.loc[part.index, "q_bh"] = adjust(part["p_wilcoxon"].to_numpy(), "fdr_bh")
    out["verdict"] = [decide(float(t), float(h), float(lo), float(hi), s.alpha) for t, h, lo, hi in
                      out[["p_tost", "p_holm", "ci_low", "ci_high"]].to_numpy(np.float64)]
    out["arm"] = out["arm_id"]
    out = out.sort_values(["arm_id", "reference", "task", "metric", "level", "seed"], kind="stable")
    return out.reset_index(drop=True)


def trend_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """Page's trend test per arm × task × metric × reference over the pruned models' levels, the reference's
    margin as the first column (per seed, and pooled over seeds: per-image means, when a family has several)."""
    check_pairs(pairs)
    pruned = pairs[pairs["model_role"] == "pruned"]
    rows = []
    for key, g in pruned.groupby(FAMILY, sort=False, dropna=False):
        seeds = sorted(g["seed"].unique())
        parts = [(int(sd), g[g["seed"] == sd]) for sd in seeds] + ([(POOLED, g)] if len(seeds) > 1 else [])
        for sd, h in parts:
            model = h.pivot_table(index="image_id", columns="level", values="margin_model", aggfunc="mean")
            ref = h.groupby("image_id")["margin_reference"].mean()
            mat = pd.concat([ref.rename(-1.0), model], axis=1).sort_index(axis=1)
            res = page_trend(mat.to_numpy(np.float64))
            rows.append({**dict(zip(FAMILY, key, strict=True)), "seed": sd,
                         "levels": ",".join(f"{v:g}" for v in model.columns), **res})
    return pd.DataFrame(rows, columns=[*FAMILY, "seed", "levels", "n_images", "n_levels", "L", "p_decreasing",
                                       "p_increasing"])


def slope_table(cells: pd.DataFrame, perf: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Slope of mean Δ faithfulness on Δ task metric across pruned models (one point per model and seed), per
    arm and over all arms, for every task × metric × reference. ``perf``: model_id, reference_id, task,
    d_perf (the task's primary metric, model minus reference, signed so that positive = better)."""
    columns = ["scope", "task", "metric", "reference", "n_models", "slope", "ci_low", "ci_high", "p"]
    if cells.empty:  # no pruned model has a scored explanation paired with its reference's
        return pd.DataFrame(columns=columns)
    pts = cells[(cells["seed"] != POOLED) & (cells["model_role"] == "pruned")]
    pts = pts.merge(perf[["model_id", "reference_id", "task", "d_perf"]], on=["model_id", "reference_id", "task"])
    rows = []
    for scope_keys, scope in ((["arm_id"], "arm"), ([], "all")):
        for key, g in pts.groupby([*scope_keys, "task", "metric", "reference"], sort=False):
            k = dict(zip([*scope_keys, "task", "metric", "reference"], key, strict=True))
            rows.append({"scope": k.pop("arm_id", "all") if scope == "arm" else "all", **k,
                         **slope(g["d_perf"].to_numpy(), g["mean_delta"].to_numpy(), level)})
    return pd.DataFrame(rows, columns=columns)
