"""Deletion (Petsiuk et al. 2018, RISE, https://arxiv.org/abs/1806.07421), the worked example of a metric.

Pixels ranked by saliency (RISE: ``argsort`` of the flat map, flipped: most relevant first) are perturbed in
``n_steps`` equal steps of ``ceil(H * W / n_steps)`` pixels (RISE: 224 pixels per step of a 224 x 224 image,
i.e. 224 steps; scaled to the image, the step count stays); the curve is the task scalar over its clean value
after 0, 1, ..., n_steps steps; ``score`` = AUC by the trapezoid rule over [0, 1] (RISE's ``auc``), lower is
more faithful; ``score_norm`` = 1 - AUC. The fill is the study's (D18; RISE deletes to zeros: ``fill="black"``).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mtlx_core.faithfulness.metric import ImageContext, Metric, trapezoid
from mtlx_core.faithfulness.plan import CurvePlan, FillSpec, groups_by_rank, segment_plan

RISE_STEPS = 224


@dataclass(frozen=True)
class PixelStepSettings:
    n_steps: int = RISE_STEPS
    fill: str = "quantus"


def pixel_ranking(ranking: np.ndarray, reverse: bool) -> np.ndarray:
    """Flat pixel indices, most relevant first, as RISE orders them (``flip(argsort(map))``); reversed: least
    relevant first."""
    order = np.argsort(ranking.reshape(-1))
    return order if reverse else order[::-1]


class Deletion(Metric):
    name: ClassVar[str] = "deletion"
    reference: ClassVar[str] = "Petsiuk et al. 2018 (RISE evaluation.py, CausalMetric 'del')"
    direction: ClassVar[str] = "deletion"

    def __init__(self, n_steps: int = RISE_STEPS, fill: str = "quantus") -> None:
        if n_steps < 1:
            raise ValueError(f"{self.name}: n_steps must be at least 1, got {n_steps}")
        self.settings = PixelStepSettings(n_steps, fill)
        self.fill = FillSpec(fill)

    def settings_dict(self, shape: tuple[int, int] | None = None) -> dict[str, object]:
        d: dict[str, object] = {"n_steps": self.settings.n_steps, "fill": self.settings.fill, "summary": "auc"}
        if shape is not None:
            d["pixels_per_step"] = -(-shape[0] * shape[1] // self.settings.n_steps)
        return d

    def plan(self, ctx: ImageContext, ranking: np.ndarray, reverse: bool, root: Hashable) -> CurvePlan:
        h, w = ctx.shape
        labels = groups_by_rank(pixel_ranking(ranking, reverse), self.settings.n_steps).reshape(h, w)
        n = int(labels.max()) + 1
        return segment_plan(ctx.image, ctx.index, labels, np.arange(n), np.arange(n + 1), self.fill,
                            self.direction, None)

    def summarise(self, curve: np.ndarray, plan: CurvePlan) -> tuple[float, float]:
        auc = trapezoid(curve, dx=1.0 / max(len(curve) - 1, 1))
        return auc, 1.0 - auc
