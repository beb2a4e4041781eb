"""Faithfulness Correlation (Bhatt et al. 2020, https://arxiv.org/abs/2005.00631) as Quantus 0.6.0's
``FaithfulnessCorrelation`` computes it (``docs/metrics_reference.md`` §7).

``nr_runs`` random subsets of ``subset_size`` channel features (flat ``c * H * W + pixel``) are drawn exactly as
Quantus draws them for one image after ``np.random.seed(seed)`` (``reference_orders.
faithfulness_correlation_subsets``); each run sets its subset of the **clean** image to the fill (one
non-accumulating step: ``CurvePlan.changed``). The subsets depend on the seed and the image shape only, so
every curve of an image (every map, ordering and target) shares the same perturbed images: the engine forwards
each run once per image. The curve is the task scalar over its clean value per run; ``score`` = Pearson's r
between the runs' attribution sums (float32 sums of the max-normalised map broadcast to the channels) and
their drops ``1 - c_r`` (Quantus: ``f_0 - f_r``; r is invariant to the positive scaling by ``f_0``);
``score_norm`` = ``(r + 1) / 2``. A curve that never moves has no r: status ``undefined_score``; so has one that
moves only by float rounding (peak-to-peak drop at most ``FLAT_CURVE`` = 1e-6, a few float32 ulps at 1: its r is
the correlation of rounding noise, which two equivalent forwards do not reproduce).

There is no ordering in the metric itself: the most relevant first row scores the map; the reversed row scores
``max(a) - a`` (r of the reversed row = -r up to rounding); a random ordering's map is scored like any map
(chance: r = 0).

Defaults (D28): Quantus' ``nr_runs=100``, fill "black" (``min``: the image's minimum), ``subset_size=224``
features of a 224 x 224 x 3 image scaled to keep its share of the features: ``round(224 H W / 224^2 * C / 3)``.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.stats

from mtlx_core.faithfulness.metric import ImageContext, Metric
from mtlx_core.faithfulness.plan import FILLS, CurvePlan, FillSpec
from mtlx_core.faithfulness.reference_orders import (
    REFERENCE_SIDE,
    faithfulness_correlation_subsets,
    quantus_normalise,
)

FAITHCORR_FILLS: tuple[str, ...] = tuple(f for f in FILLS if f not in ("quantus", "road"))
#: a drop curve whose peak-to-peak is at most this moved by float rounding only: no r (``undefined_score``)
FLAT_CURVE = 1e-6


@dataclass(frozen=True)
class FaithCorrSettings:
    nr_runs: int = 100
    subset_size: int | None = None  # None: Quantus' 224 features scaled to the image
    fill: str = "min"
    seed: int = 0


def scaled_subset_size(shape: tuple[int, int], channels: int = 3) -> int:
    h, w = shape
    return max(2, round(224 * h * w / REFERENCE_SIDE**2 * channels / 3))


def reversed_map(a: np.ndarray) -> np.ndarray:
    """The map whose order is the reverse of ``a``'s: ``max(a) - a`` (non-negative, as Quantus requires)."""
    a = np.asarray(a, dtype=np.float32)
    return a.max() - a


class FaithfulnessCorrelation(Metric):
    name: ClassVar[str] = "faithcorr"
    reference: ClassVar[str] = "Bhatt et al. 2020; Quantus 0.6.0 FaithfulnessCorrelation"

    def __init__(self, nr_runs: int = 100, subset_size: int | None = None, fill: str = "min", seed: int = 0) -> None:
        if nr_runs < 2:
            raise ValueError(f"faithcorr: nr_runs must be at least 2 (a correlation), got {nr_runs}")
        if subset_size is not None and subset_size < 1:
            raise ValueError(f"faithcorr: subset_size must be at least 1, got {subset_size}")
        if fill not in FAITHCORR_FILLS:
            raise ValueError(f"faithcorr: unknown fill {fill!r}; valid fills: {', '.join(FAITHCORR_FILLS)}")
        self.settings = FaithCorrSettings(nr_runs, subset_size, fill, seed)
        self._subsets: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}

    def subset_size(self, shape: tuple[int, int], channels: int = 3) -> int:
        return self.settings.subset_size or scaled_subset_size(shape, channels)

    def settings_dict(self, shape: tuple[int, int] | None = None) -> dict[str, object]:
        s = self.settings
        return {"nr_runs": s.nr_runs, "subset_size": self.subset_size(shape) if shape else s.subset_size,
                "fill": s.fill, "seed": s.seed, "unit": "channel_feature", "summary": "pearson"}

    def runs(self, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(subsets (R, S), changed (R, C, H, W) bool, uniform fills (R,) or None)`` of an image shape, as
        Quantus draws them (cached: every curve of every image of that shape uses them)."""
        c, h, w = shape
        if shape not in self._subsets:
            s = self.settings
            size = self.subset_size((h, w), c)
            if size > c * h * w:
                raise ValueError(f"faithcorr: subset_size {size} exceeds the image's {c * h * w} features")
            subsets = faithfulness_correlation_subsets(s.seed, c * h * w, size, s.nr_runs)
            changed = np.zeros((s.nr_runs, c * h * w), dtype=bool)
            np.put_along_axis(changed, subsets, True, axis=1)
            fills = None
            if s.fill == "uniform":  # Quantus draws one uniform scalar right after each run's subset
                rs = np.random.RandomState(s.seed)
                fills = np.empty(s.nr_runs, dtype=np.float32)
                for r in range(s.nr_runs):
                    rs.choice(c * h * w, size, replace=False)
                    fills[r] = rs.uniform(0.0, 1.0, size=1)[0]
            self._subsets = {shape: (subsets, changed.reshape(s.nr_runs, c, h, w), fills)}  # one shape kept
        return self._subsets[shape]

    def plan(self, ctx: ImageContext, ranking: np.ndarray, reverse: bool, root: Hashable) -> CurvePlan:
        c, h, w = ctx.image.shape
        subsets, changed, fills = self.runs((c, h, w))
        a = quantus_normalise(reversed_map(ranking) if reverse else ranking)
        att = np.broadcast_to(a[None], (c, h, w)).reshape(-1)[subsets].sum(axis=-1)
        n = self.settings.nr_runs
        # every curve of the image perturbs the same runs: one root, so the engine forwards each run once
        plan = CurvePlan(ctx.index, np.full((h, w), n, dtype=np.int32), np.arange(n), np.arange(1, n + 1),
                         FillSpec(self.settings.fill), "deletion", ("faithcorr", self.settings, (c, h, w)),
                         changed=changed, step_fill=fills)
        plan.extra["attribution_sums"] = att
        return plan

    def summarise(self, curve: np.ndarray, plan: CurvePlan) -> tuple[float, float]:
        att = np.asarray(plan.extra["attribution_sums"])
        drop = 1.0 - np.asarray(curve, dtype=np.float64)
        if np.ptp(drop) <= FLAT_CURVE or np.ptp(att) == 0:  # no movement beyond float rounding: r would be noise
            return float("nan"), float("nan")
        r = float(scipy.stats.pearsonr(att, drop)[0])
        return r, (r + 1.0) / 2.0
