"""ROAD, RemOve And Debias (Rong et al. 2022, https://arxiv.org/abs/2202.00449), as pytorch-grad-cam 1.5.7
computes it (``ROADMostRelevantFirstAverage`` / ``ROADLeastRelevantFirstAverage``; ``docs/metrics_reference.md``
§4a), or as Quantus 0.6.0's ``ROAD`` (§4b) with ``convention="quantus"``.

Each percentile perturbs the **clean** image (nothing accumulates: ``CurvePlan.changed``): the removed pixels
are filled by noisy linear imputation from their neighbours (``road_fill``), with the library's noise replayed
exactly: one stream over the percentiles in the library's call order, handed to the engine per step in
``extra["noise_draws"]`` (and, for Quantus, the removed pixels in its order in ``extra["road_pixels"]``).

- ``gradcam`` (default): at percentile ``p`` (10, 20, ..., 90) the removed set is ``~(cam < percentile(cam,
  p))`` (most relevant first; ties at the threshold removed together) or the same on ``1 - cam`` (reversed:
  least relevant first): about ``100 - p`` % of the pixels; noise ``torch.randn(C, k)`` from
  ``torch.Generator().manual_seed(seed)``.
- ``quantus``: at percentage ``p`` (1, 3, ..., 99) the first ``int(H W p / 100)`` pixels of
  ``argsort(-a_n)`` (reversed: that order reversed); noise ``RandomState(seed).randn(C, k)``.

The curve's steps go from the smallest to the largest removed share (grad-cam's percentiles descending,
Quantus' ascending; ``extra["percentiles"]`` gives each step's percentile). ``score`` = ``mean(c) - 1``, the
mean change of the task scalar relative to its clean value (pytorch-grad-cam's output on the normalised scalar);
``score_norm`` = ``1 - mean(c)``, in [0, 1] for a curve in [0, 1], higher = more faithful for the most relevant
first curve.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from mtlx_core.faithfulness.metric import ImageContext, Metric
from mtlx_core.faithfulness.plan import CurvePlan, FillSpec
from mtlx_core.faithfulness.reference_orders import gradcam_road_removed, quantus_normalise
from mtlx_core.faithfulness.road_fill import gradcam_noise

CONVENTIONS: tuple[str, ...] = ("gradcam", "quantus")
GRADCAM_PERCENTILES: tuple[float, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
QUANTUS_PERCENTAGES: tuple[float, ...] = tuple(range(1, 100, 2))


@dataclass(frozen=True)
class RoadSettings:
    percentiles: tuple[float, ...] | None = None  # None: the convention's (grad-cam 10..90, Quantus 1..99 by 2)
    noise: float = 0.01
    seed: int = 0
    convention: str = "gradcam"


class Road(Metric):
    name: ClassVar[str] = "road"
    reference: ClassVar[str] = "Rong et al. 2022; pytorch-grad-cam 1.5.7 ROAD (Quantus 0.6.0 ROAD: convention)"

    def __init__(self, percentiles: tuple[float, ...] | list[float] | None = None, noise: float = 0.01,
                 seed: int = 0, convention: str = "gradcam") -> None:
        if convention not in CONVENTIONS:
            raise ValueError(f"road: unknown convention {convention!r}; valid: {', '.join(CONVENTIONS)}")
        pcts = None if percentiles is None else tuple(float(p) for p in percentiles)
        if pcts is not None and (not pcts or any(not 0 <= p <= 100 for p in pcts)):
            raise ValueError(f"road: percentiles must be a non-empty list within [0, 100], got {percentiles}")
        if noise < 0:
            raise ValueError(f"road: noise must be non-negative, got {noise}")
        self.settings = RoadSettings(pcts, float(noise), seed, convention)

    def percentiles(self) -> tuple[float, ...]:
        """The percentiles in the library's call order (the order of its noise stream)."""
        s = self.settings
        if s.percentiles is not None:
            return s.percentiles
        return GRADCAM_PERCENTILES if s.convention == "gradcam" else QUANTUS_PERCENTAGES

    def step_order(self) -> np.ndarray:
        """Index into :meth:`percentiles` of each curve step (removed share ascending)."""
        p = np.asarray(self.percentiles())
        return np.argsort(-p if self.settings.convention == "gradcam" else p, kind="stable")

    def settings_dict(self, shape: tuple[int, int] | None = None) -> dict[str, object]:
        s = self.settings
        return {"percentiles": [float(p) for p in self.percentiles()], "noise": s.noise, "seed": s.seed,
                "convention": s.convention, "summary": "mean_change"}

    def _removed(self, ranking: np.ndarray, reverse: bool) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        """Removed masks ``(H, W)`` per percentile (call order) and, for Quantus, the pixels in its order."""
        h, w = ranking.shape
        if self.settings.convention == "gradcam":
            how = "lerf" if reverse else "morf"
            return [gradcam_road_removed(ranking, p, how) for p in self.percentiles()], [None] * len(self.percentiles())
        order = np.argsort(-quantus_normalise(ranking).reshape(1, -1), axis=1)[0]
        if reverse:
            order = order[::-1]
        pixels = [order[: int(h * w * p / 100)] for p in self.percentiles()]
        masks = []
        for pix in pixels:
            m = np.zeros(h * w, dtype=bool)
            m[pix] = True
            masks.append(m.reshape(h, w))
        return masks, list(pixels)

    def plan(self, ctx: ImageContext, ranking: np.ndarray, reverse: bool, root: Hashable) -> CurvePlan:
        c, h, w = ctx.image.shape
        masks, pixels = self._removed(np.asarray(ranking), reverse)
        s = self.settings
        if s.convention == "gradcam":  # one torch stream over the percentiles, in call order
            gen = torch.Generator().manual_seed(s.seed)
            draws = [gradcam_noise(int(m.sum()), c, gen).numpy() for m in masks]
        else:
            rs = np.random.RandomState(s.seed)
            draws = [rs.randn(c, int(m.sum())) for m in masks]
        steps = self.step_order()
        n = len(steps)
        plan = CurvePlan(ctx.index, np.full((h, w), n, dtype=np.int32), np.arange(n), np.arange(1, n + 1),
                         FillSpec("road", s.seed, s.noise), "deletion", None,
                         changed=np.stack([masks[j] for j in steps]))
        plan.extra["noise_draws"] = {k + 1: draws[j] for k, j in enumerate(steps)}
        if s.convention == "quantus":
            plan.extra["road_pixels"] = {k + 1: pixels[j] for k, j in enumerate(steps)}
        plan.extra["percentiles"] = [self.percentiles()[j] for j in steps]
        return plan

    def summarise(self, curve: np.ndarray, plan: CurvePlan) -> tuple[float, float]:
        mean = float(np.mean(np.asarray(curve, dtype=np.float64)))
        return mean - 1.0, 1.0 - mean
