"""Region Perturbation / AOPC (Samek et al. 2017, https://arxiv.org/abs/1509.06321) as Quantus 0.6.0's
``RegionPerturbation`` computes it (``docs/metrics_reference.md`` §5).

The image is padded to multiples of ``patch_size`` (floor half before, ceil half after) and cut into square
patches numbered row-major; a patch's score is the float32 sum of the max-normalised map over the padded patch
and its C channels (padding = 0); patches are perturbed cumulatively in ``argsort(-sums)`` order (reversed:
``argsort(sums)``, Quantus' ``order="lerf"``); the curve is the task scalar over its clean value after each of
the first ``L = min(regions_evaluation, n_patches)`` patches (no step 0). ``score`` = AOPC =
``sum_k (1 - c_k) / (L + 1)`` (Samek's mean over k = 0..L, whose k = 0 term is 0); ``score_norm`` =
``AOPC (L + 1) / L``, the mean drop, in [0, 1] for a curve in [0, 1], higher = more faithful.

Defaults (D28): Quantus' ``patch_size=8`` scaled to the image (``max(1, round(8 min(H, W) / 224))``),
``regions_evaluation=100``, fill ``min`` (Quantus' "black": the image's minimum, not 0). ``fill="uniform"``
replays Quantus' "uniform" baseline: one scalar ``RandomState(seed).uniform(0, 1)`` per step. Any other
engine fill (``quantus``, ``fixed``, ``blur``, ``black``) may be used too.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mtlx_core.faithfulness.metric import ImageContext, Metric
from mtlx_core.faithfulness.plan import FILLS, CurvePlan, FillSpec, segment_plan, step_map_of
from mtlx_core.faithfulness.reference_orders import REFERENCE_SIDE, quantus_normalise

#: every engine fill but ROAD's imputation; ``uniform`` is Quantus' one scalar per step
REGION_FILLS: tuple[str, ...] = tuple(f for f in FILLS if f != "road")


@dataclass(frozen=True)
class RegionSettings:
    patch_size: int | None = None  # None: Quantus' 8 pixels scaled to the image
    regions_evaluation: int = 100
    fill: str = "min"
    seed: int = 0  # Quantus' "uniform" draws


def scaled_patch_size(shape: tuple[int, int]) -> int:
    return max(1, round(8 * min(shape) / REFERENCE_SIDE))


def padding(d: int, p: int) -> tuple[int, int]:
    """Quantus' ``get_padding_size``: ``(floor(t / 2), ceil(t / 2))`` with ``t = p - d % p`` (0 if divisible)."""
    if d % p == 0:
        return 0, 0
    t = p - d % p
    return t // 2, t - t // 2


def patch_grid(a: np.ndarray, channels: int, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (H, W), sums (1, n_patches) float32)``: each pixel's patch and each patch's summed normalised
    map, summed as Quantus does (the patch's ``C * p * p`` values in channel, row, column order, NumPy's
    float32 pairwise sum), so that ``argsort`` breaks ties as Quantus' does."""
    h, w = a.shape
    (top, bottom), (left, right) = padding(h, patch), padding(w, patch)
    a_pad = np.pad(quantus_normalise(a), ((top, bottom), (left, right)))
    nbh, nbw = a_pad.shape[0] // patch, a_pad.shape[1] // patch
    blocks = a_pad.reshape(nbh, patch, nbw, patch).transpose(0, 2, 1, 3)  # (nbh, nbw, p, p)
    values = np.broadcast_to(blocks[:, :, None], (nbh, nbw, channels, patch, patch))
    sums = np.ascontiguousarray(values).reshape(nbh * nbw, -1).sum(axis=-1)[None]
    labels = ((np.arange(h) + top) // patch)[:, None] * nbw + ((np.arange(w) + left) // patch)[None, :]
    return labels, sums


class RegionPerturbation(Metric):
    name: ClassVar[str] = "region"
    reference: ClassVar[str] = "Samek et al. 2017; Quantus 0.6.0 RegionPerturbation"

    def __init__(self, patch_size: int | None = None, regions_evaluation: int = 100, fill: str = "min",
                 seed: int = 0) -> None:
        if patch_size is not None and patch_size < 1:
            raise ValueError(f"region: patch_size must be at least 1, got {patch_size}")
        if regions_evaluation < 1:
            raise ValueError(f"region: regions_evaluation must be at least 1, got {regions_evaluation}")
        if fill not in REGION_FILLS:
            raise ValueError(f"region: unknown fill {fill!r}; valid fills: {', '.join(REGION_FILLS)}")
        self.settings = RegionSettings(patch_size, regions_evaluation, fill, seed)

    def patch_size(self, shape: tuple[int, int]) -> int:
        return self.settings.patch_size or scaled_patch_size(shape)

    def settings_dict(self, shape: tuple[int, int] | None = None) -> dict[str, object]:
        s = self.settings
        d: dict[str, object] = {"patch_size": s.patch_size, "regions_evaluation": s.regions_evaluation,
                                "fill": s.fill, "summary": "aopc"}
        if s.fill == "uniform":
            d["seed"] = s.seed
        if shape is not None:
            d["patch_size"] = self.patch_size(shape)
        return d

    def plan(self, ctx: ImageContext, ranking: np.ndarray, reverse: bool, root: Hashable) -> CurvePlan:
        patch = self.patch_size(ctx.shape)
        labels, sums = patch_grid(ranking, ctx.image.shape[0], patch)
        order = (np.argsort(sums, -1) if reverse else np.argsort(-sums, -1))[0]
        n_eval = min(self.settings.regions_evaluation, len(order))
        steps = np.arange(1, n_eval + 1)
        key = ("region", self.settings, patch)
        if self.settings.fill != "uniform":
            return segment_plan(ctx.image, ctx.index, labels, order, steps, FillSpec(self.settings.fill),
                                "deletion", key)
        rs = np.random.RandomState(self.settings.seed)  # Quantus draws one uniform scalar per step
        table = np.array([rs.uniform(0.0, 1.0, size=1)[0] for _ in range(len(order))], dtype=np.float32)
        return CurvePlan(ctx.index, step_map_of(labels, order), order, steps, FillSpec("quantus"), "deletion", key,
                         fill_table=table)

    def summarise(self, curve: np.ndarray, plan: CurvePlan) -> tuple[float, float]:
        drops = 1.0 - np.asarray(curve, dtype=np.float64)
        aopc = float(drops.sum() / (len(drops) + 1))
        return aopc, float(drops.mean())
