"""XGrad-CAM (Fu et al., BMVC 2020, https://arxiv.org/abs/2008.02312):
``w_k = sum_uv(G_k * A_k) / (sum_uv(A_k) + 1e-7)``, ``map = ReLU(sum_k w_k A_k)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from mtlx_core.explain.explainers.base import GradientCam, spatial_sum

EPS = 1e-7


@dataclass(frozen=True)
class XGradCam(GradientCam):
    name: ClassVar[str] = "xgradcam"

    def combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        weights = (grads * acts / (spatial_sum(acts) + EPS)).sum(dim=(-2, -1))  # (S, B, K)
        return torch.einsum("sbk,bkhw->sbhw", weights, acts)
