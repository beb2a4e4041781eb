"""Rebuild structurally pruned models and count their size.

A structurally pruned checkpoint stores smaller conv / BN / linear tensors than the architecture it came from.
It is rebuilt without pickled modules as::

    model = resize_to_state_dict(build_model(**arch_config), state_dict)
    model.load_state_dict(state_dict)

This works because the models' forward passes take every channel count from the weights.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TypeVar

import torch
from torch import nn

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=nn.Module)


def _pair(value: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d size attribute (kernel, stride, padding, dilation: always two ints) as a pair."""
    first, second = value
    return first, second


def _conv_groups(module: nn.Conv2d, shape: tuple[int, ...], key: str) -> tuple[int, int]:
    """``(groups, in_channels)`` of ``module`` rebuilt to a weight of ``shape``.

    A depthwise conv (``groups == in_channels``, ``out = multiplier * in``) keeps its multiplier: pruning
    removes whole groups (Torch-Pruning's rule). Another grouped conv keeps its number of groups."""
    out, per_group = shape[0], shape[1]
    if module.groups > 1 and module.groups == module.in_channels:
        mult = module.out_channels // module.groups
        if per_group != 1 or out % mult:
            raise ValueError(f"state dict {key}weight {shape} cannot rebuild the depthwise conv {key.rstrip('.')} "
                             f"(groups={module.groups}, {mult} filter(s) per group, "
                             f"weight {tuple(module.weight.shape)})")
        return out // mult, out // mult
    if out % module.groups:
        raise ValueError(f"state dict {key}weight {shape} cannot rebuild the grouped conv {key.rstrip('.')}: "
                         f"{out} output channels do not divide into its {module.groups} groups")
    return module.groups, per_group * module.groups


def _resized(module: nn.Module, key: str, state_dict: Mapping[str, torch.Tensor]) -> nn.Module | None:
    """A module of the stored shape when it differs from ``module``'s, else None."""
    if isinstance(module, nn.Conv2d):
        w = state_dict.get(f"{key}weight")
        if w is None or tuple(w.shape) == tuple(module.weight.shape):
            return None
        if tuple(w.shape[2:]) != tuple(module.kernel_size):
            raise ValueError(f"state dict {key}weight has kernel {tuple(w.shape[2:])}, model has {module.kernel_size}")
        groups, cin = _conv_groups(module, tuple(w.shape), key)
        padding = module.padding if isinstance(module.padding, str) else _pair(module.padding)
        return nn.Conv2d(cin, w.shape[0], _pair(module.kernel_size),
                         stride=_pair(module.stride), padding=padding, dilation=_pair(module.dilation),
                         groups=groups,
                         bias=module.bias is not None, padding_mode=module.padding_mode,
                         device=module.weight.device, dtype=module.weight.dtype)
    if isinstance(module, nn.BatchNorm2d):
        ref = state_dict.get(f"{key}weight", state_dict.get(f"{key}running_mean"))
        if ref is None or ref.shape[0] == module.num_features:
            return None
        device = module.weight.device if module.weight is not None else None
        return nn.BatchNorm2d(ref.shape[0], eps=module.eps, momentum=module.momentum, affine=module.affine,
                              track_running_stats=module.track_running_stats, device=device)
    if isinstance(module, nn.Linear):
        w = state_dict.get(f"{key}weight")
        if w is None or tuple(w.shape) == tuple(module.weight.shape):
            return None
        return nn.Linear(w.shape[1], w.shape[0], bias=module.bias is not None,
                         device=module.weight.device, dtype=module.weight.dtype)
    return None


def resize_to_state_dict(model: M, state_dict: Mapping[str, torch.Tensor]) -> M:
    """Replace every Conv2d / BatchNorm2d / Linear whose stored shape differs by a fresh module of that shape.

    Stride, padding, dilation, groups, bias, eps and momentum are kept; the new modules are initialised by
    PyTorch's defaults (``load_state_dict`` overwrites them) and take the training mode of the one they
    replace. Modules absent from ``state_dict`` are left alone. Returns ``model`` (changed in place).
    """
    replaced = 0
    for name, module in list(model.named_modules()):
        new = _resized(module, f"{name}." if name else "", state_dict)
        if new is None:
            continue
        new.train(module.training)
        if name:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, new)
        else:
            raise ValueError("resize_to_state_dict needs a container model, got a bare layer")
        replaced += 1
    logger.debug("resize_to_state_dict replaced %d layers", replaced)
    return model


def count_params(model: nn.Module) -> int:
    """Number of parameters (every element of every parameter, BN included)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass on one input of ``input_shape`` ``(C, H, W)`` or ``(1, C, H, W)``.

    Counted on Conv2d and Linear layers only, via forward hooks: a conv contributes
    ``out_elements * in_channels / groups * kh * kw``, a linear layer ``out_elements * in_features``
    (``out_elements`` per sample). Biases, BN, activations, pooling, unpooling, interpolation and attention
    products are not counted; zeroed (unstructured-pruned) weights count as dense. Runs in eval mode without
    gradients and restores the model's mode.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or shape[0] != 1:
        raise ValueError(f"input_shape must be (C, H, W) or (1, C, H, W), got {tuple(input_shape)}")
    total = 0

    def hook(module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(shape, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)
