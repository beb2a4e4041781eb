"""Pixel-Flipping (Bach et al. 2015, https://doi.org/10.1371/journal.pone.0130140) as Quantus 0.6.0's
``PixelFlipping`` computes it (``docs/metrics_reference.md`` §6).

The unit is a channel feature (one channel of one pixel): the max-normalised map is broadcast to the C
channels and sorted as ``argsort(-a)`` over the ``C * H * W`` features (flat index ``c * H * W + pixel``,
NumPy's default sort, whose tie-breaking decides where a pixel's C tied copies land); step ``s`` sets
features ``order[s F : (s + 1) F]`` to the fill, cumulatively, so the curve has ``C H W / F`` points (no step
0). Reversed: that order reversed. ``score`` = ``np.trapz(curve, dx=1)`` (Quantus' ``get_auc_score`` of the
normalised curve), lower = more faithful; ``score_norm`` = ``1 - score / (n - 1)`` (for n > 1 points).

Defaults (D28): Quantus' fill "black" (``min``: the image's minimum); ``features_in_step`` F: Quantus' 1 makes
``C H W`` forwards per curve, so the default is scaled to about ``target_steps = 224`` steps: the divisor of
``H * W`` nearest ``C H W / 224`` (Quantus asserts ``H W % F == 0``), recorded per image shape.
``fill="uniform"`` replays Quantus' one scalar per step from ``RandomState(seed)``.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mtlx_core.faithfulness.metric import ImageContext, Metric, trapezoid
from mtlx_core.faithfulness.plan import FILLS, CurvePlan, FillSpec
from mtlx_core.faithfulness.reference_orders import _nearest_divisor, feature_order

#: fills of a (C, H, W) step map: image-valued fills and Quantus' per-step uniform scalar
PIXEL_FLIP_FILLS: tuple[str, ...] = tuple(f for f in FILLS if f not in ("quantus", "road"))


@dataclass(frozen=True)
class PixelFlipSettings:
    features_in_step: int | None = None  # None: the divisor of H * W nearest C * H * W / target_steps
    target_steps: int = 224
    fill: str = "min"
    seed: int = 0  # Quantus' "uniform" draws


class PixelFlipping(Metric):
    name: ClassVar[str] = "pixelflip"
    reference: ClassVar[str] = "Bach et al. 2015; Quantus 0.6.0 PixelFlipping"

    def __init__(self, features_in_step: int | None = None, target_steps: int = 224, fill: str = "min",
                 seed: int = 0) -> None:
        if features_in_step is not None and features_in_step < 1:
            raise ValueError(f"pixelflip: features_in_step must be at least 1, got {features_in_step}")
        if target_steps < 1:
            raise ValueError(f"pixelflip: target_steps must be at least 1, got {target_steps}")
        if fill not in PIXEL_FLIP_FILLS:
            raise ValueError(f"pixelflip: unknown fill {fill!r}; valid fills: {', '.join(PIXEL_FLIP_FILLS)}")
        self.settings = PixelFlipSettings(features_in_step, target_steps, fill, seed)

    def features_in_step(self, shape: tuple[int, int], channels: int = 3) -> int:
        h, w = shape
        given = self.settings.features_in_step
        return given if given is not None else _nearest_divisor(h * w, channels * h * w / self.settings.target_steps)

    def settings_dict(self, shape: tuple[int, int] | None = None) -> dict[str, object]:
        s = self.settings
        d: dict[str, object] = {"features_in_step": s.features_in_step, "target_steps": s.target_steps,
                                "fill": s.fill, "unit": "channel_feature", "summary": "auc"}
        if s.fill == "uniform":
            d["seed"] = s.seed
        if shape is not None:
            d["features_in_step"] = self.features_in_step(shape)
        return d

    def plan(self, ctx: ImageContext, ranking: np.ndarray, reverse: bool, root: Hashable) -> CurvePlan:
        c, h, w = ctx.image.shape
        per = self.features_in_step((h, w), c)
        if (h * w) % per:  # Quantus' assertion
            raise ValueError(f"pixelflip: features_in_step {per} does not divide H * W = {h * w}")
        order = feature_order(ranking, c)
        if reverse:
            order = order[::-1]
        n = len(order) // per
        step_map = np.empty(c * h * w, dtype=np.int32)
        step_map[order] = np.arange(len(order), dtype=np.int32) // per
        # groups are steps (not fixed regions of the image), so two orders share no prefix: a root of its own
        plan = CurvePlan(ctx.index, step_map.reshape(c, h, w), np.arange(n), np.arange(1, n + 1),
                         FillSpec(self.settings.fill), "deletion", None)
        if self.settings.fill == "uniform":  # Quantus: one scalar per step, written into that step's features
            rs = np.random.RandomState(self.settings.seed)
            plan.fill = FillSpec("quantus")
            plan.fill_table = np.array([rs.uniform(0.0, 1.0, size=1)[0] for _ in range(n)], dtype=np.float32)
        return plan

    def summarise(self, curve: np.ndarray, plan: CurvePlan) -> tuple[float, float]:
        auc = trapezoid(np.asarray(curve, dtype=np.float64), dx=1.0)
        n = len(curve)
        return auc, (1.0 - auc / (n - 1)) if n > 1 else 1.0 - float(curve[0])
