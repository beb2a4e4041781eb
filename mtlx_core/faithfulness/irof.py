"""IROF, Iterative Removal Of Features (Rieger & Hansen 2020, https://arxiv.org/abs/2003.08747; D16-D19).

SLIC segments (computed once per image, D16) ordered by mean saliency, highest first (Quantus' float32 mean,
``explain.perturbation.segment_order``); segment after segment is replaced by the fill (D18), cumulatively; the
curve is the task scalar after k = 1..L removals over its clean value (as Quantus); ``score`` = AOC =
``L - trapezoid(curve, dx=1)``, ``score_norm`` = AOC / L. Agrees with Quantus 0.6.0's IROF within 1e-4
(``tests/test_quantus_agreement.py``).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mtlx_core.explain.perturbation import segment_order
from mtlx_core.faithfulness.metric import ImageContext, Metric, trapezoid
from mtlx_core.faithfulness.plan import CurvePlan, FillSpec, segment_plan


@dataclass(frozen=True)
class IrofSettings:
    fill: str = "quantus"  # D18: ``quantus`` (running mean) or ``fixed`` (per-channel mean); any engine fill


class Irof(Metric):
    name: ClassVar[str] = "irof"
    reference: ClassVar[str] = "Rieger & Hansen 2020; Quantus 0.6.0 IROF"
    uses_superpixels: ClassVar[bool] = True

    def __init__(self, fill: str = "quantus") -> None:
        self.settings = IrofSettings(fill)
        self.fill = FillSpec(fill)

    def settings_dict(self, shape: tuple[int, int] | None = None) -> dict[str, object]:
        return {"fill": self.settings.fill, "segments": "slic", "summary": "aoc"}

    def plan(self, ctx: ImageContext, ranking: np.ndarray, reverse: bool, root: Hashable) -> CurvePlan:
        sp = ctx.superpixels
        assert sp is not None
        order = segment_order(ranking, sp.labels, sp.n_segments, ctx.image.shape[0])
        if reverse:
            order = order[::-1].copy()
        return segment_plan(ctx.image, ctx.index, sp.labels, order, np.arange(1, len(order) + 1), self.fill,
                            "deletion", ("irof", self.settings))

    def summarise(self, curve: np.ndarray, plan: CurvePlan) -> tuple[float, float]:
        aoc = float(len(curve) - trapezoid(curve, dx=1.0))
        return aoc, aoc / plan.n_steps
