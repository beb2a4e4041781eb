"""Grad-CAM++ (Chattopadhay et al., WACV 2018, https://arxiv.org/abs/1710.11063), eq. 19 with the exponential
replaced by the identity (as pytorch-grad-cam's ``GradCAMPlusPlus``):

``alpha = G^2 / (2 G^2 + sum_uv(A) G^3 + 1e-6)`` (0 where ``G = 0``), ``w_k = sum_uv(ReLU(G) * alpha)``,
``map = ReLU(sum_k w_k A_k)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from mtlx_core.explain.explainers.base import GradientCam, spatial_sum

EPS = 1e-6


@dataclass(frozen=True)
class GradCamPlusPlus(GradientCam):
    name: ClassVar[str] = "gradcampp"

    def combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        g2 = grads.square()
        g3 = g2 * grads
        alpha = g2 / (2 * g2 + spatial_sum(acts) * g3 + EPS)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        weights = (torch.relu(grads) * alpha).sum(dim=(-2, -1))  # (S, B, K)
        return torch.einsum("sbk,bkhw->sbhw", weights, acts)
