"""Model registry: ``build_model(arch, task_channels, width, **kwargs)``.

A checkpoint rebuilds its model with ``build_model(**model.arch_config)`` (plus
``surgery.resize_to_state_dict`` when it was structurally pruned). SegNet-MTAN and DeepLab are registered in
``mtlx_core.plugins`` like a plugin's model (their classes are the factories); any other registered model is
built by its factory and wrapped in :class:`~mtlx_core.models.plugin_model.PluginModel`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mtlx_core import plugins
from mtlx_core.models.base import SHARED, MultiTaskModel
from mtlx_core.models.deeplab import DeepLabResNet34
from mtlx_core.models.segnet_mtan import SegNetMTAN
from mtlx_core.tasks.base import Task

#: the built-in architectures (their classes); ``plugins.model_names()`` lists every registered model
MODELS: dict[str, type[MultiTaskModel]] = {
    "segnet_mtan": SegNetMTAN,
    "deeplab_resnet34": DeepLabResNet34,
}

plugins.register_model("segnet_mtan", SegNetMTAN, explain_layer="conv_block_enc.4",
                       task_modules={"{task}": ("encoder_att.{task}", "decoder_att.{task}", "heads.{task}")},
                       input_multiple=32, source=plugins.BUILTIN)
plugins.register_model("deeplab_resnet34", DeepLabResNet34, explain_layer="backbone.blocks.3.2.conv2",
                       task_modules={"{task}": ("heads.{task}",)}, input_multiple=1, source=plugins.BUILTIN)


def build_model(arch: str, task_channels: Mapping[str, int], width: float = 1.0, *, plugin: str | None = None,
                **kwargs: Any) -> MultiTaskModel:
    """Build architecture ``arch`` with one head per task (``task_channels``: task name -> output channels).

    A registered plugin model gets ``kwargs`` (and ``width`` when it is not 1) as factory arguments; ``plugin``
    (recorded in its ``arch_config``) only names the plugin in the error when ``arch`` is not registered."""
    if arch in MODELS:
        return MODELS[arch](task_channels, width=width, **kwargs)
    try:
        entry = plugins.get_model_entry(arch)
    except ValueError as exc:
        if plugin:
            raise ValueError(f"model {arch!r} comes from plugin {plugin!r}, which is not loaded: "
                             f"{plugins.HOW_TO_LOAD} ({exc})") from None
        raise
    from mtlx_core.models.plugin_model import PluginModel

    return PluginModel(entry, task_channels, width=width, **kwargs)


def task_channels(tasks: Mapping[str, Task]) -> dict[str, int]:
    """``{name: out_channels}`` of the tasks of a run (the output of ``mtlx_core.tasks.build_tasks``)."""
    return {name: task.out_channels for name, task in tasks.items()}


__all__ = ["MODELS", "SHARED", "DeepLabResNet34", "MultiTaskModel", "SegNetMTAN", "build_model", "task_channels"]
