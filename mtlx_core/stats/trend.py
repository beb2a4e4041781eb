"""Multiple-testing corrections, the trend over sparsity levels and the link to task performance (D25).

Public API::

    adjust(p, method)                   # Holm or Benjamini-Hochberg adjusted p; NaN stays NaN, not counted
    adjust_within(df, keys, column, method)  # the same within each family of rows sharing ``keys``
    page_trend(margins)                 # Page's L test over levels (columns in level order), both directions
    slope(x, y, level)                  # OLS slope of y on x with its t interval (scipy.stats.linregress)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

METHODS: tuple[str, ...] = ("holm", "fdr_bh")


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values of finite ``p``: ``max_{j<=i} min(1, (m - j) p_(j))`` in sorted order.
    Written out because statsmodels' ``multipletests(method="holm")`` runs ``gc.collect()`` on every call (about
    20 ms with pandas loaded, once per family); ``tests/test_stats_verdict.py`` checks it equals statsmodels'."""
    m = p.size
    order = np.argsort(p, kind="mergesort")
    adj = np.minimum(1.0, np.maximum.accumulate(p[order] * np.arange(m, 0, -1)))
    out = np.empty(m)
    out[order] = adj
    return out


def adjust(p: Sequence[float] | np.ndarray, method: str = "holm") -> np.ndarray:
    """Adjusted p-values of the finite entries of ``p`` (NaN stays NaN and is not counted in the family):
    ``holm`` (:func:`holm`, equal to statsmodels') or ``fdr_bh`` (``multipletests(p, method="fdr_bh")[1]``)."""
    if method not in METHODS:
        raise ValueError(f"unknown correction {method!r}; valid corrections: {', '.join(METHODS)}")
    a = np.asarray(p, dtype=np.float64)
    out = np.full(a.shape, math.nan)
    ok = np.isfinite(a)
    if ok.any():
        out[ok] = holm(a[ok]) if method == "holm" else multipletests(a[ok], method=method)[1]
    return out


def adjust_within(df: pd.DataFrame, keys: Sequence[str], column: str, method: str = "holm") -> pd.Series:
    """``adjust`` of ``df[column]`` within each family of rows with equal ``keys``; index aligned with ``df``."""
    out = pd.Series(math.nan, index=df.index, dtype=np.float64)
    if df.empty:
        return out
    for _, idx in df.groupby(list(keys), sort=False, dropna=False).groups.items():
        out.loc[idx] = adjust(df.loc[idx, column].to_numpy(np.float64), method)
    return out


def page_trend(margins: np.ndarray) -> dict[str, float]:
    """Page's L test (``scipy.stats.page_trend_test``) on a ``(images, levels)`` array of margins, columns in
    increasing sparsity (the reference first). Rows with a missing value are dropped. ``p_decreasing``: the
    alternative that faithfulness falls with sparsity; ``p_increasing``: that it rises. Needs at least 2 complete
    rows and 3 levels, else NaN."""
    a = np.asarray(margins, dtype=np.float64)
    out = {"n_images": 0.0, "n_levels": float(a.shape[1]) if a.ndim == 2 else 0.0, "L": math.nan,
           "p_decreasing": math.nan, "p_increasing": math.nan}
    if a.ndim != 2:
        return out
    a = a[np.all(np.isfinite(a), axis=1)]
    out["n_images"] = float(a.shape[0])
    k = a.shape[1]
    if a.shape[0] < 2 or k < 3:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inc = stats.page_trend_test(a)
        dec = stats.page_trend_test(a, predicted_ranks=np.arange(k, 0, -1))
    out.update({"L": float(dec.statistic), "p_decreasing": float(dec.pvalue), "p_increasing": float(inc.pvalue)})
    return out


def slope(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Least-squares slope of ``y`` on ``x`` (``scipy.stats.linregress``) with its ``level`` t interval
    (``slope ± t_{n-2} · stderr``) and two-sided p; NaN with fewer than 3 points or no spread in ``x``."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    out = {"n_models": float(xa.size), "slope": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    if xa.size < 3 or np.ptp(xa) == 0:
        return out
    r = stats.linregress(xa, ya)
    t = float(stats.t.ppf((1 + level) / 2, xa.size - 2))
    out.update({"slope": float(r.slope), "ci_low": float(r.slope - t * r.stderr),
                "ci_high": float(r.slope + t * r.stderr), "p": float(r.pvalue)})
    return out
