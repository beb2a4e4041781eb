"""HiResCAM (Draelos & Carin, 2020, https://arxiv.org/abs/2011.08891): ``map = ReLU(sum_k G_k * A_k)``
(element-wise, no spatial averaging of the gradient)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from mtlx_core.explain.explainers.base import GradientCam


@dataclass(frozen=True)
class HiResCam(GradientCam):
    name: ClassVar[str] = "hirescam"

    def combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return (grads * acts).sum(dim=2)
