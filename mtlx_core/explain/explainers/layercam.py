"""LayerCAM (Jiang et al., IEEE TIP 2021, https://ieeexplore.ieee.org/document/9462463):
``map = ReLU(sum_k ReLU(G_k) * A_k)`` (element-wise positive gradients)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from mtlx_core.explain.explainers.base import GradientCam


@dataclass(frozen=True)
class LayerCam(GradientCam):
    name: ClassVar[str] = "layercam"

    def combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return (torch.relu(grads) * acts).sum(dim=2)
