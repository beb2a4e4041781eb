"""Tests and effect sizes of one cell's paired per-image scores (D25), each a library call where one exists.

Public API::

    wilcoxon_p(delta)                     # two-sided Wilcoxon signed-rank p (scipy.stats.wilcoxon defaults)
    tost_p(model, reference, margin)      # paired TOST p (statsmodels ttost_paired(model, reference, -m, m))
    rank_biserial(delta)                  # matched-pairs rank-biserial correlation (zero differences dropped)
    share_lost(mean_delta, dense_margin)  # share of the dense model's mean margin lost: -mean_delta / |dense|
    decide(p_tost, p_holm, ci_low, ci_high, alpha)  # the verdict rule: equivalent / lower / higher / inconclusive
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats
from statsmodels.stats.weightstats import ttost_paired

ALPHA = 0.05
VERDICTS: tuple[str, ...] = ("equivalent", "lower", "higher", "inconclusive")


def _finite(x: np.ndarray | list[float]) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a[np.isfinite(a)]


def wilcoxon_p(delta: np.ndarray | list[float]) -> float:
    """``scipy.stats.wilcoxon(delta).pvalue`` with the library's defaults (two-sided, zeros dropped, exact for
    small samples without ties). All-zero differences give 1.0; fewer than 2 values give NaN."""
    d = _finite(delta)
    if d.size < 2:
        return math.nan
    if not np.any(d != 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about ties / small samples
        return float(stats.wilcoxon(d).pvalue)


def tost_p(model: np.ndarray, reference: np.ndarray, margin: float) -> float:
    """Paired TOST p-value against ``[-margin, margin]``: ``ttost_paired(model, reference, -margin, margin)[0]``.
    NaN when the margin is not positive, there are fewer than 2 pairs, or the differences have no spread."""
    x = np.asarray(model, dtype=np.float64)
    y = np.asarray(reference, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if not (math.isfinite(margin) and margin > 0) or x.size < 2 or np.ptp(x - y) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(ttost_paired(x, y, -margin, margin)[0])


def rank_biserial(delta: np.ndarray | list[float]) -> float:
    """Matched-pairs rank-biserial correlation (Kerby 2014): ``(R+ - R-) / (R+ + R-)`` with ``R±`` the sums of
    the ranks of ``|delta|`` (average ranks for ties) over positive / negative differences; zeros are dropped as
    in the Wilcoxon test. In [-1, 1]; NaN when no difference is non-zero."""
    d = _finite(delta)
    d = d[d != 0]
    if d.size == 0:
        return math.nan
    ranks = stats.rankdata(np.abs(d))
    pos, neg = float(ranks[d > 0].sum()), float(ranks[d < 0].sum())
    return (pos - neg) / (pos + neg)


def share_lost(mean_delta: float, dense_margin: float) -> float:
    """Share of the dense model's mean margin that the model lost: ``-mean_delta / |dense_margin|`` (positive =
    lost, negative = gained); NaN when the dense margin is 0 or missing."""
    if not (math.isfinite(dense_margin) and dense_margin != 0 and math.isfinite(mean_delta)):
        return math.nan
    return -mean_delta / abs(dense_margin)


def decide(p_tost: float, p_holm: float, ci_low: float, ci_high: float, alpha: float = ALPHA) -> str:
    """The verdict (D25): ``equivalent`` if TOST rejects (p_tost < alpha); else ``lower`` / ``higher`` if the
    Holm-adjusted Wilcoxon p < alpha and the interval lies wholly below / above 0; else ``inconclusive``.
    NaN inputs never reject."""
    if math.isfinite(p_tost) and p_tost < alpha:
        return "equivalent"
    if math.isfinite(p_holm) and p_holm < alpha:
        if math.isfinite(ci_high) and ci_high < 0:
            return "lower"
        if math.isfinite(ci_low) and ci_low > 0:
            return "higher"
    return "inconclusive"
