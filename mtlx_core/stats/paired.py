"""Paired tests on per-image differences (D25): mean, BCa bootstrap interval, Wilcoxon signed-rank, Holm.

The unit is the image: ``diff[i]`` is one image's difference (for instance Grad-CAM's score minus the random
baseline's on the same image and targets, D24). Everything uses the libraries' own definitions so anyone can
recompute a number: ``scipy.stats.bootstrap(method="BCa")`` and ``scipy.stats.wilcoxon`` with its defaults,
``statsmodels.stats.multitest.multipletests(method="holm")``.

Public API::

    s = paired_summary(diff, n_boot=10_000, seed=0)   # PairedSummary(n, mean, ci_low, ci_high, p)
    holm([0.01, 0.04, 0.2])                            # Holm-adjusted p-values, same order
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

N_BOOT = 10_000
LEVEL = 0.95


@dataclass(frozen=True)
class PairedSummary:
    """Mean of the paired differences, its BCa interval, the two-sided Wilcoxon p-value."""

    n: int
    mean: float
    ci_low: float
    ci_high: float
    p: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def paired_summary(diff: Sequence[float] | np.ndarray, n_boot: int = N_BOOT, seed: int = 0,
                   level: float = LEVEL) -> PairedSummary:
    """Summary of per-image differences (NaNs dropped). Fewer than 2 finite values give NaN interval and p;
    all-equal differences give a point interval at the mean (and p = 1 when they are all zero)."""
    d = np.asarray(diff, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = int(d.size)
    if n == 0:
        return PairedSummary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if n < 2:
        return PairedSummary(n, mean, math.nan, math.nan, math.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on BCa with tiny samples / on ties in wilcoxon
        p = float(stats.wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
        if np.all(d == d[0]):  # no spread: the bootstrap distribution is a point
            return PairedSummary(n, mean, mean, mean, p)
        ci = stats.bootstrap((d,), np.mean, n_resamples=n_boot, confidence_level=level, method="BCa",
                             random_state=np.random.default_rng(seed)).confidence_interval
    return PairedSummary(n, mean, float(ci.low), float(ci.high), p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (NaN stays NaN and is not counted in the family)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out.tolist()
