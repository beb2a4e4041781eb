"""The one definition of a faithfulness aggregate: the mean over an image's targets, then the mean over images
with a 95 % percentile bootstrap interval that resamples whole images (the targets of one image are not
independent). The CLI summary, the app's figures and every export call these functions.

Public API::

    per_image(df, keys, columns)                  # mean of ``columns`` over each image's targets
    mean_interval(values, n_boot, seed, level)    # (mean, ci_low, ci_high) of per-image values
    group_intervals(per_image_df, keys, column)   # one row per group: mean, ci_low, ci_high, n_images
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

N_BOOT = 1000
LEVEL = 0.95


def per_image(df: pd.DataFrame, keys: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """Mean of ``columns`` over the targets of each image (rows are targets; ``keys`` must include
    ``image_id``); ``n_targets`` counts them. Rows whose value is missing do not count."""
    if "image_id" not in keys:
        raise ValueError(f"per_image groups by image: keys {list(keys)} lack image_id")
    g = df.groupby(list(keys), sort=False, dropna=False)
    out = g[list(columns)].mean().reset_index()
    out["n_targets"] = g.size().to_numpy()
    return out


def bootstrap_means(values: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """Bootstrap means ``(n_boot, G)`` of each row of ``values`` ``(G, n)``, all rows resampled alike.

    Resample ``b`` draws ``n`` indices with replacement (``default_rng(seed).integers``); its mean is computed
    as (multiplicity of each index) @ values / n, so many groups cost one matrix product.
    """
    _g, n = values.shape
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    counts = np.bincount((np.arange(n_boot)[:, None] * n + idx).ravel(), minlength=n_boot * n).reshape(n_boot, n)
    return counts.astype(np.float64) @ values.T / n


def mean_interval(values: Sequence[float] | np.ndarray, n_boot: int = N_BOOT, seed: int = 0,
                  level: float = LEVEL) -> tuple[float, float, float]:
    """Mean of per-image ``values`` (NaNs dropped) and its percentile bootstrap interval over the images."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = np.quantile(bootstrap_means(v[None], n_boot, seed)[:, 0], [(1 - level) / 2, (1 + level) / 2])
    return float(v.mean()), float(lo), float(hi)


def group_intervals(df: pd.DataFrame, keys: Sequence[str], column: str, n_boot: int = N_BOOT, seed: int = 0,
                    level: float = LEVEL) -> pd.DataFrame:
    """``mean_interval`` of ``column`` per group of ``keys`` (rows are images): groups with as many images
    share one resampling, so every group's interval is exactly ``mean_interval`` of its values."""
    rows = []
    groups = [(k if isinstance(k, tuple) else (k,), g[column].to_numpy(np.float64))
              for k, g in df.groupby(list(keys), sort=False, dropna=False)]
    groups = [(k, v[np.isfinite(v)]) for k, v in groups]
    lo = np.full(len(groups), np.nan)
    hi = np.full(len(groups), np.nan)
    by_size: dict[int, list[int]] = {}
    for i, (_, v) in enumerate(groups):
        if len(v):
            by_size.setdefault(len(v), []).append(i)
    for members in by_size.values():
        means = bootstrap_means(np.stack([groups[i][1] for i in members]), n_boot, seed)
        lo[members], hi[members] = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=0)
    for i, (k, v) in enumerate(groups):
        rows.append((*k, float(v.mean()) if len(v) else float("nan"), lo[i], hi[i], len(v)))
    return pd.DataFrame(rows, columns=[*keys, "mean", "ci_low", "ci_high", "n_images"])
