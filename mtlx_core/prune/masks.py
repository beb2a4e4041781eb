"""Unstructured weight masks: which tensors are pruned, global sparsity, and keeping pruned weights at zero.

Every Conv2d / Linear weight is prunable (decision D7); biases and BN never are. ``MaskCallback`` is a
``TrainCallback``: it zeroes the masked gradients after backward (so Adam's moments of pruned weights stay zero)
and the masked weights after every optimizer step (so nothing, weight decay included, can resurrect them). Its
state holds the masks, so a resumed fine-tuning run keeps them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


def prunable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<module>.weight": parameter}`` of every Conv2d / Linear, in module order."""
    return {f"{name}.weight": m.weight for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d | nn.Linear)}


def weight_sparsity(model: nn.Module) -> float:
    """Share of exactly-zero entries over all Conv2d / Linear weights (global, as DiSparse reports it)."""
    weights = prunable_weights(model).values()
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / total if total else 0.0


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned weights in place."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        p = params[name]
        p.mul_(mask.to(device=p.device, dtype=p.dtype))


class MaskCallback:
    """Keeps masked weights exactly zero during training (see the module docstring)."""

    def __init__(self, masks: Mapping[str, torch.Tensor] | None = None) -> None:
        self.masks: dict[str, torch.Tensor] = {k: v.bool().cpu() for k, v in (masks or {}).items()}
        self._on_device: dict[str, torch.Tensor] = {}

    def _pairs(self, model: nn.Module) -> list[tuple[nn.Parameter, torch.Tensor]]:
        params = dict(model.named_parameters())
        out = []
        for name, mask in self.masks.items():
            p = params.get(name)
            if p is None or mask.shape != p.shape:
                raise ValueError(f"mask {name} of shape {tuple(mask.shape)} does not fit the model "
                                 f"({'no such parameter' if p is None else tuple(p.shape)})")
            m = self._on_device.get(name)
            if m is None or m.device != p.device or m.dtype != p.dtype:
                m = self._on_device[name] = mask.to(device=p.device, dtype=p.dtype)
            out.append((p, m))
        return out

    def after_backward(self, model: nn.Module, iteration: int) -> None:
        for p, m in self._pairs(model):
            if p.grad is not None:
                p.grad.mul_(m)

    @torch.no_grad()
    def after_step(self, model: nn.Module, iteration: int, lr: float) -> None:
        for p, m in self._pairs(model):
            p.mul_(m)

    def state_dict(self) -> dict[str, Any]:
        return {"masks": dict(self.masks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = {k: v.bool().cpu() for k, v in state["masks"].items()}
        self._on_device = {}
