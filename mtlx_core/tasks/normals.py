"""Surface normals: 1 - cosine on valid pixels; angle statistics pooled over every valid pixel."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch

from mtlx_core.tasks.base import (
    DEFAULT_SCORE_OPTIONS,
    ExplanationTarget,
    MetricAccumulator,
    ScoreOptions,
    Task,
    masked_mean,
)

ANGLE_THRESHOLDS: tuple[float, ...] = (11.25, 22.5, 30.0)
N_OCTANTS = 8


def octant_signs(octant: int) -> tuple[int, int, int]:
    """Sign triple ``(sx, sy, sz)`` of an octant id.

    Ids follow the authors' order (R11): ``id = 4 * [z > 0] + 2 * [x > 0] + [y > 0]``, i.e.
    (-,-,-), (-,+,-), (+,-,-), (+,+,-), (-,-,+), (-,+,+), (+,-,+), (+,+,+).
    """
    if not 0 <= octant < N_OCTANTS:
        raise ValueError(f"octant id must be in 0..{N_OCTANTS - 1}, got {octant}")
    return (1 if octant & 2 else -1, 1 if octant & 1 else -1, 1 if octant & 4 else -1)


def octant_name(octant: int) -> str:
    """``(+,-,+)``: signs of x, y, z."""
    return "(" + ",".join("+" if s > 0 else "-" for s in octant_signs(octant)) + ")"


def octant_index(normals: torch.Tensor) -> torch.Tensor:
    """Octant id ``(H, W)`` of every pixel of a normal map ``(3, H, W)``; a component > 0 is ``+`` (D14)."""
    pos = (normals.detach() > 0).long()
    return 4 * pos[2] + 2 * pos[0] + pos[1]


def valid_normals(target: torch.Tensor) -> torch.Tensor:
    """Mask ``(B, 1, H, W)`` of pixels with a ground-truth normal (all-zero = invalid)."""
    return (target != 0).any(dim=1, keepdim=True)


class NormalAngles(MetricAccumulator):
    """Keeps the angle of every valid pixel so that the median is the exact pooled median."""

    def __init__(self) -> None:
        self.angles: list[np.ndarray] = []

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        mask = valid_normals(target)[:, 0]
        p = pred.detach().permute(0, 2, 3, 1)[mask].double()
        g = target.permute(0, 2, 3, 1)[mask].double()
        cos = (p * g).sum(dim=1) / (p.norm(dim=1) * g.norm(dim=1)).clamp_min(1e-12)
        ang = torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))
        self.angles.append(ang.cpu().numpy().astype(np.float32))

    def compute(self) -> dict[str, float]:
        a = np.concatenate(self.angles) if self.angles else np.zeros(0, np.float32)
        if a.size == 0:
            out = {"mean_angle": float("nan"), "median_angle": float("nan")}
            out.update({f"within_{t:g}": float("nan") for t in ANGLE_THRESHOLDS})
            return out
        a64 = a.astype(np.float64)
        out = {"mean_angle": float(a64.mean()), "median_angle": float(np.median(a64))}
        out.update({f"within_{t:g}": float((a64 < t).mean()) for t in ANGLE_THRESHOLDS})
        return out


class NormalsTask(Task):
    """Surface normal estimation; predictions are unit vectors."""

    name = "normals"
    higher_is_better: ClassVar[dict[str, bool]] = {"mean_angle": False, "median_angle": False,
                        **{f"within_{t:g}": True for t in ANGLE_THRESHOLDS}}
    primary_metric = "median_angle"
    display_name = "Surface normals"
    display_kind = "rgb"

    @property
    def out_channels(self) -> int:
        return 3

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = valid_normals(target).to(pred.dtype)
        n = mask.sum()
        if n == 0:
            return pred.sum() * 0.0
        return 1.0 - (pred * target * mask).sum() / n

    def new_metric(self) -> NormalAngles:
        return NormalAngles()

    # --- explanations -----------------------------------------------------------------------------------

    def explanation_targets(self, pred: torch.Tensor) -> list[ExplanationTarget]:
        """One target per non-empty octant of the clean predicted unit normal (D14, threshold 0)."""
        idx = octant_index(pred)
        return [ExplanationTarget(self.name, o, octant_name(o), idx == o, "octant")
                for o in torch.unique(idx).tolist()]

    def gradcam_objective(self, pred: torch.Tensor, target: ExplanationTarget) -> torch.Tensor:
        """Sum over the octant's clean pixels of ``dot(n, s / sqrt(3))`` with ``s`` its sign triple (D14)."""
        s = torch.tensor(octant_signs(target.target_id), dtype=pred.dtype, device=pred.device) / math.sqrt(3.0)
        return ((pred * s.view(3, 1, 1)).sum(dim=0) * target.mask).sum()

    def perturbation_score(self, pred: torch.Tensor, clean: torch.Tensor, masks: torch.Tensor,
                           target_ids: torch.Tensor, options: ScoreOptions = DEFAULT_SCORE_OPTIONS) -> torch.Tensor:
        """Mean ``(cos + 1) / 2`` between perturbed and clean normals over the octant's clean pixels (D17).

        The cosine is ``F.cosine_similarity``'s formula written out (its CPU kernel is ~20x slower on
        ``(R, 3, H, W)``, a sizeable share of IROF's time)."""
        dot = (pred * clean).sum(dim=1)
        cos = dot / (pred.square().sum(dim=1) * clean.square().sum(dim=1)).clamp_min(1e-16).sqrt()
        return masked_mean((cos + 1.0) / 2.0, masks)
