"""Registered Grad-CAM layers per architecture: the layer ablation of precompute and the app's layer selector.

Each architecture class lists its layers in ``gradcam_layers`` (label -> module path); a path may contain
``{task}``, filled with the explained task (MTAN's task-attention modules are per task). The first entry is
decision D11's layer (the model's ``default_gradcam_layer``). A layer is given by label (``dec_stage2``) or by
module path (``conv_block_dec.2``); both resolve with :func:`resolve_layer_name`.

Public API::

    registered_layers(model)                    # {label: module path template}, D11's first
    resolve_layer_name(model, "dec_stage2")      # "conv_block_dec.2"
    resolve_layer_name(model, "task_att_dec2", task="depth")   # "decoder_att.depth.2"
    layer_label(model, "decoder_att.depth.2")    # "task_att_dec2" (the path itself when not registered)
    layer_labels(arch)                           # labels of a registered architecture (by name)
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

D11 = "d11"  # the label that always means the model's default (D11) layer


def registered_layers(model: nn.Module) -> dict[str, str]:
    """``{label: module path template}`` of the model's architecture; D11's layer first (label ``d11``
    is added for a model that registers none)."""
    layers = dict(getattr(type(model), "gradcam_layers", {}) or {})
    default = getattr(model, "default_gradcam_layer", "")
    if default and default not in layers.values():
        layers = {D11: default, **layers}
    return layers


def layer_labels(arch: str) -> list[str]:
    """The registered labels of architecture ``arch`` (a registered model name; a plugin model has ``d11``)."""
    from mtlx_core.models import MODELS
    from mtlx_core.plugins import get_model_entry

    if arch in MODELS:
        return list(MODELS[arch].gradcam_layers)
    get_model_entry(arch)  # the error lists the registered models
    return [D11]


def resolve_layer_name(model: nn.Module, layer: str | None, task: str | None = None) -> str:
    """Module path of ``layer`` (a registered label, a module path, ``d11`` or ``None`` = the default layer)."""
    default = getattr(model, "default_gradcam_layer", "")
    per_task: dict[str, str] = getattr(model, "task_gradcam_layers", None) or {}
    if per_task and (layer is None or layer == D11):
        if task is None:
            raise ValueError(f"the default layer of {type(model).__name__} is per task: give the task")
        if task not in per_task:
            raise ValueError(f"no Grad-CAM layer declared for task {task!r}; declared: {', '.join(per_task)}")
        return per_task[task]
    name = default if layer is None or layer == D11 else registered_layers(model).get(layer, layer)
    if not name:
        raise ValueError("no Grad-CAM layer given and the model has no default_gradcam_layer")
    if "{task}" in name:
        if task is None:
            raise ValueError(f"layer {layer!r} ({name}) is per task: give the task")
        name = name.format(task=task)
    return name


def check_layers(model: nn.Module, layers: Sequence[str], tasks: Sequence[str]) -> list[str]:
    """The layers (labels or paths) that resolve on ``model`` for every task; a clear error for the others."""
    bad = []
    for layer in layers:
        for task in tasks:
            try:
                model.get_submodule(resolve_layer_name(model, layer, task))
            except (AttributeError, ValueError):
                bad.append(f"{layer} ({task})")
    if bad:
        valid = ", ".join(registered_layers(model))
        raise ValueError(f"unknown Grad-CAM layer(s) {', '.join(bad)} for {type(model).__name__}; registered "
                         f"layers: {valid} (or any module path of the model)")
    return list(layers)


def layer_label(model_or_arch: nn.Module | str, path: str) -> str:
    """The registered label of a resolved module path (the path itself when it is not registered)."""
    if isinstance(model_or_arch, str):
        from mtlx_core.models import MODELS

        cls = MODELS.get(model_or_arch)
        layers = dict(getattr(cls, "gradcam_layers", {}) or {})
    else:
        layers = registered_layers(model_or_arch)
        if path in (getattr(model_or_arch, "task_gradcam_layers", None) or {}).values():
            return D11
    for label, template in layers.items():
        if template == path:
            return label
        if "{task}" in template:
            head, _, tail = template.partition("{task}")
            if path.startswith(head) and path.endswith(tail) and len(path) > len(head) + len(tail) \
                    and "." not in path[len(head):len(path) - len(tail)]:
                return label
    return path
