"""Intervals of a mean paired difference (D25): BCa paired bootstrap for one seed, hierarchical bootstrap for several.

Public API::

    bca_paired(model, reference, n_boot, seed, level)    # per row of (G, n) arrays: BCa interval of mean(model - ref)
    hierarchical(delta, n_boot, seed, level)             # (S, n) deltas, NaN = missing: pooled mean and interval

``bca_paired`` is ``scipy.stats.bootstrap((model, reference), mean difference, paired=True, method="BCa",
n_resamples=n_boot, random_state=default_rng(seed))``. Rows of one call share the resampled image indices, as
scipy does for a batch, so each row's interval is exactly what that call gives for the row alone (tested): a
reader recomputes any cell with one scipy call.

``hierarchical`` resamples seeds with replacement, then images with replacement (the same images for every seed
drawn, since every seed's models are scored on the same images, D26), and takes the pooled mean of the present
(seed, image) differences of the resample: percentile interval. Vectorised: resample ``b``'s statistic is
``w_s[b] @ D @ w_i[b] / w_s[b] @ M @ w_i[b]`` with the multiplicities ``w`` and the presence mask ``M``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

N_BOOT = 10_000
LEVEL = 0.95


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def bca_paired(model: np.ndarray, reference: np.ndarray, n_boot: int = N_BOOT, seed: int = 0,
               level: float = LEVEL, max_elements: int = 4_000_000) -> tuple[np.ndarray, np.ndarray]:
    """BCa interval of the mean of ``model - reference`` for every row of two ``(G, n)`` arrays (no NaN).

    Rows whose differences are all equal get the point interval at their mean (the bootstrap distribution is a
    point); ``n < 2`` gives NaN. scipy resamples in batches of at most ``max_elements`` values (memory only: the
    batches do not change the result).
    """
    x = np.atleast_2d(np.asarray(model, dtype=np.float64))
    y = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    if x.shape != y.shape:
        raise ValueError(f"bca_paired: model {x.shape} and reference {y.shape} differ in shape")
    g, n = x.shape
    lo, hi = np.full(g, math.nan), np.full(g, math.nan)
    if n < 2 or g == 0:
        return lo, hi
    d = x - y
    flat = np.ptp(d, axis=1) == 0
    lo[flat] = hi[flat] = d[flat].mean(axis=1)
    rows = np.flatnonzero(~flat)
    if rows.size:
        batch = max(1, min(n_boot, max_elements // (rows.size * n)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's warnings on small or skewed samples
            ci = stats.bootstrap((x[rows], y[rows]), _mean_diff, paired=True, vectorized=True, axis=-1,
                                 n_resamples=n_boot, confidence_level=level, method="BCa", batch=batch,
                                 random_state=np.random.default_rng(seed)).confidence_interval
        lo[rows], hi[rows] = np.asarray(ci.low), np.asarray(ci.high)
    return lo, hi


def _counts(rng: np.random.Generator, n_boot: int, k: int) -> np.ndarray:
    """Multiplicities ``(n_boot, k)`` of ``k`` draws with replacement from ``k`` items, per resample."""
    idx = rng.integers(0, k, size=(n_boot, k))
    flat = (np.arange(n_boot)[:, None] * k + idx).ravel()
    return np.bincount(flat, minlength=n_boot * k).reshape(n_boot, k).astype(np.float64)


def hierarchical(delta: np.ndarray, n_boot: int = N_BOOT, seed: int = 0,
                 level: float = LEVEL) -> tuple[float, float, float]:
    """Pooled mean of a ``(S, n)`` array of per-(seed, image) differences (NaN = the pair is missing) and its
    hierarchical percentile bootstrap interval (seeds, then images). Fewer than 2 seeds or 2 images: NaN."""
    D = np.asarray(delta, dtype=np.float64)
    if D.ndim != 2:
        raise ValueError(f"hierarchical: delta must be (seeds, images), got shape {D.shape}")
    M = np.isfinite(D).astype(np.float64)
    if M.sum() == 0:
        return math.nan, math.nan, math.nan
    D0 = np.where(M > 0, D, 0.0)
    mean = float(D0.sum() / M.sum())
    s, n = D.shape
    if s < 2 or n < 2:
        return mean, math.nan, math.nan
    rng = np.random.default_rng(seed)
    ws, wi = _counts(rng, n_boot, s), _counts(rng, n_boot, n)
    num = np.einsum("bs,bs->b", ws, wi @ D0.T)
    den = np.einsum("bs,bs->b", ws, wi @ M.T)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = num / den
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return mean, math.nan, math.nan
    q_lo, q_hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return mean, float(q_lo), float(q_hi)
