"""What every multi-task model of the registry has in common.

A model is built from ``task_channels`` (task name -> output channels) and a width multiplier, and
exposes:

- ``forward(x) -> dict[str, Tensor]`` at the input resolution, tasks in the canonical order (``plugins.task_names()``);
- ``arch_config``: JSON-serialisable keyword arguments of ``build_model`` that rebuild the architecture;
- ``default_gradcam_layer``: a module name usable with ``model.get_submodule`` (decision D11), and
  ``gradcam_layers``: the registered layers of the layer ablation (``mtlx_core.models.layers``);
- ``module_owner(name)``: ``"shared"`` or the task a module / parameter belongs to. Task-specific modules
  carry their task's name as one component of their dotted name (``heads.depth.0``), so ownership is
  read from the name alone;
- ``shared_parameters()`` / ``task_parameters(task)`` built on ``module_owner``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from mtlx_core import plugins

logger = logging.getLogger(__name__)

SHARED = "shared"
#: channels a task's prediction must have (segmentation: any number of classes >= 2)
FIXED_CHANNELS: dict[str, int] = {"depth": 1, "normals": 3}


def validate_task_channels(task_channels: Mapping[str, int]) -> dict[str, int]:
    """Check ``task_channels`` and return it in the canonical task order (built-in tasks, then registered ones)."""
    names = plugins.task_names()
    if not isinstance(task_channels, Mapping) or not task_channels:
        raise ValueError(f"task_channels must be a non-empty mapping task -> channels; valid tasks: "
                         f"{', '.join(names)}")
    unknown = [t for t in task_channels if t not in names]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown} in task_channels; valid tasks: {', '.join(names)} (a "
                         f"plugin's task must be registered: {plugins.HOW_TO_LOAD})")
    out: dict[str, int] = {}
    for t in names:
        if t not in task_channels:
            continue
        c = task_channels[t]
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"task_channels[{t!r}] must be a positive int, got {c!r}")
        if t in FIXED_CHANNELS and c != FIXED_CHANNELS[t]:
            raise ValueError(f"task_channels[{t!r}] must be {FIXED_CHANNELS[t]}, got {c}")
        if t == "segmentation" and c < 2:
            raise ValueError(f"task_channels['segmentation'] needs at least 2 classes, got {c}")
        out[t] = c
    return out


def scale_channels(channels: int, width: float) -> int:
    """``channels * width`` rounded to the nearest integer, at least 1."""
    return max(1, round(channels * width))


class MultiTaskModel(nn.Module):
    """Base class: bookkeeping of tasks, architecture config and ownership of modules."""

    #: registry name of the architecture (``mtlx_core.plugins.model_names()``)
    arch_name: str = ""
    #: what the input's height and width must divide by (a plugin model's ``input_multiple``)
    input_multiple: int = 1
    #: Grad-CAM layers of the architecture, label -> module path (``{task}`` allowed), D11's first
    gradcam_layers: ClassVar[dict[str, str]] = {}

    def __init__(self, task_channels: Mapping[str, int], width: float = 1.0, **kwargs: Any) -> None:
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int | float) or not width > 0:
            raise ValueError(f"width must be a positive number, got {width!r}")
        self.task_channels: dict[str, int] = validate_task_channels(task_channels)
        self.task_names: tuple[str, ...] = tuple(self.task_channels)
        self.width = float(width)
        self.arch_config: dict[str, Any] = {
            "arch": self.arch_name,
            "task_channels": dict(self.task_channels),
            "width": self.width,
            **kwargs,
        }
        self.default_gradcam_layer: str = ""
        #: per-task Grad-CAM layers (task -> module path) where the default layer differs per task (plugins)
        self.task_gradcam_layers: dict[str, str] = {}

    def module_owner(self, name: str) -> str:
        """``"shared"`` or the task that owns the module or parameter called ``name``."""
        parts = name.split(".")
        for t in self.task_names:
            if t in parts:
                return t
        return SHARED

    def _owned_parameters(self, owner: str) -> Iterator[nn.Parameter]:
        for name, p in self.named_parameters():
            if self.module_owner(name) == owner:
                yield p

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters of the shared trunk (every parameter no task owns)."""
        return list(self._owned_parameters(SHARED))

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Parameters specific to ``task`` (its head, and for MTAN its attention modules)."""
        if task not in self.task_names:
            raise ValueError(f"task {task!r} is not a task of this model; its tasks: {', '.join(self.task_names)}")
        return list(self._owned_parameters(task))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


def finish_prediction(task: str, y: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Task-specific output activation: unit normals (L2 over channels, norm floored at ``eps``); others raw.

    The norm is ``sqrt(max(sum of squares, eps**2))`` written with elementwise ops and a channel sum, not
    ``Tensor.norm``: on CPU ``norm(dim=1)`` of an NCHW tensor runs a scalar reduction (~50x slower here, a
    tenth of an IROF forward), and the sum is vectorised over pixels, so each pixel's value does not depend on
    the batch it is in. Flooring before the square root keeps the gradient finite at a zero vector.
    """
    if task == "normals":
        return y / (y * y).sum(dim=1, keepdim=True).clamp_min(eps * eps).sqrt()
    return y
