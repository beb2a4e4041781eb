"""Grad-CAM (Selvaraju et al., ICCV 2017): the project's implementation (``mtlx_core.explain.gradcam``), unchanged.

``map = ReLU(sum_k mean_uv(G_k) * A_k)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from mtlx_core.explain import gradcam as _gradcam
from mtlx_core.explain.explainers.base import GradientCam, Targets
from mtlx_core.explain.gradcam import Explanation, GradCamSettings
from mtlx_core.tasks.base import Task


@dataclass(frozen=True)
class GradCam(GradientCam):
    name: ClassVar[str] = "gradcam"

    def combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return _gradcam.gradcam_combine(acts, grads)

    def explain(self, model: nn.Module, images: torch.Tensor, task: Task, layer: str | None = None,
                targets: Targets = None) -> list[Explanation]:
        return _gradcam.explain(model, images, task, layer, targets)

    def settings(self, layer: str, task: Task, **extra: object) -> GradCamSettings:
        return GradCamSettings(layer=layer, target_rule=str(getattr(task, "bins", "")))
