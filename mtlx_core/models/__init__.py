"""Model registry: ``build_model(arch, task_channels, width, **kwargs)``.

A checkpoint rebuilds its model with ``build_model(**model.arch_config)`` (plus
``surgery.resize_to_state_dict`` when it was structurally pruned).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mtlx_core.models.base import SHARED, MultiTaskModel
from mtlx_core.models.deeplab import DeepLabResNet34
from mtlx_core.models.segnet_mtan import SegNetMTAN
from mtlx_core.tasks.base import Task

MODELS: dict[str, type[MultiTaskModel]] = {
    "segnet_mtan": SegNetMTAN,
    "deeplab_resnet34": DeepLabResNet34,
}


def build_model(arch: str, task_channels: Mapping[str, int], width: float = 1.0, **kwargs: Any) -> MultiTaskModel:
    """Build architecture ``arch`` with one head per task (``task_channels``: task name -> output channels)."""
    if arch not in MODELS:
        raise ValueError(f"unknown model {arch!r}; valid models: {', '.join(MODELS)}")
    return MODELS[arch](task_channels, width=width, **kwargs)


def task_channels(tasks: Mapping[str, Task]) -> dict[str, int]:
    """``{name: out_channels}`` of the tasks of a run (the output of ``mtlx_core.tasks.build_tasks``)."""
    return {name: task.out_channels for name, task in tasks.items()}


__all__ = ["MODELS", "SHARED", "DeepLabResNet34", "MultiTaskModel", "SegNetMTAN", "build_model", "task_channels"]
