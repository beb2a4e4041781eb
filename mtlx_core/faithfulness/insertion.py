"""Insertion (Petsiuk et al. 2018, RISE): pixels ranked by saliency are copied, in ``n_steps`` equal steps, from
the image into a Gaussian-blurred copy of it (RISE's ``gkern(11, 5)`` scaled to the image: ``plan.rise_kernel``);
the curve is the task scalar over its clean value after 0, 1, ..., n_steps steps (0 = the blurred copy);
``score`` = AUC over [0, 1], higher is more faithful; ``score_norm`` = AUC.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import ClassVar

import numpy as np

from mtlx_core.faithfulness.deletion import RISE_STEPS, Deletion, PixelStepSettings
from mtlx_core.faithfulness.metric import ImageContext, trapezoid
from mtlx_core.faithfulness.plan import CurvePlan, FillSpec


class Insertion(Deletion):
    name: ClassVar[str] = "insertion"
    reference: ClassVar[str] = "Petsiuk et al. 2018 (RISE evaluation.py, CausalMetric 'ins')"
    direction: ClassVar[str] = "insertion"

    def __init__(self, n_steps: int = RISE_STEPS, fill: str = "blur") -> None:
        super().__init__(n_steps, fill)
        self.settings = PixelStepSettings(n_steps, fill)
        self.fill = FillSpec(fill)

    def plan(self, ctx: ImageContext, ranking: np.ndarray, reverse: bool, root: Hashable) -> CurvePlan:
        p = super().plan(ctx, ranking, reverse, root)
        # every insertion curve of the image starts from the same baseline: one forward for step 0
        p.start = ("insertion", self.settings)
        return p

    def summarise(self, curve: np.ndarray, plan: CurvePlan) -> tuple[float, float]:
        auc = trapezoid(curve, dx=1.0 / max(len(curve) - 1, 1))
        return auc, auc
