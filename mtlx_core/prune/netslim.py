"""Network Slimming channel selection (Liu et al., ICCV 2017, https://arxiv.org/abs/1708.06519; decision D8).

The parent is trained with an L1 penalty on every BN scale factor (``TrainConfig.bn_l1``). One global threshold
over the prunable channels' ``|gamma|`` removes the requested share of them. A channel of a coupled group
(``mtlx_core.prune.groups``: e.g. an encoder stage's output and the decoder tensor unpooled with its indices) is
written by several BNs and rated by the mean of their ``|gamma|``, so coupled channels compete like any other
instead of being kept whenever one of their BNs is large (rating by the maximum kept more full-resolution stage
channels: 13 % instead of 9 % of the dense MACs at 70 % in ``bench/pruning_speed.py``); the attention masks' last
BN is not a rating source. Every group keeps at least its best channel.

Why Adam-trained parents lose their attention paths first (checked, not a selection bug): the L1 term enters
as the sub-gradient ``s * sign(gamma)`` added to the loss gradient (``mtlx_core.train.loop.add_bn_l1``), and
Adam divides every parameter's update by its own gradient scale. For a BN whose loss gradient is much smaller
than ``s`` the update is then ``lr * sign(gamma)`` whatever ``s`` is: its ``|gamma|`` shrinks by the learning
rate every step. The attention paths' BNs (the shared ``encoder_block_att`` / ``decoder_block_att`` convs and
every attention module's hidden layer) get such tiny loss gradients: in a 40-iteration
``demo_segnet_mtan_famo`` run (lr 2e-3) all of them had ``|gamma|`` of 0.918-0.93 (= 1 - 40 * 2e-3) while the
trunk's stayed at 0.99 (mean; minimum 0.94). The global threshold then removes them first, as the method
prescribes for small scale factors. Under SGD (the original method) the shrinkage would be ``lr * s`` per
step, uniform and small. A training-side remedy, if wanted, is a decoupled L1 step (``gamma -= lr * s *
sign(gamma)`` after the optimizer step, as AdamW decouples weight decay); the selection here would not change.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from mtlx_core.prune.channels import ChannelPlan

logger = logging.getLogger(__name__)


def bn_scores(model: nn.Module, plan: ChannelPlan) -> dict[str, torch.Tensor]:
    """``{group: mean |gamma| over the group's rating BNs}`` of every prunable group that has a BN."""
    modules = dict(model.named_modules())
    return {g.name: torch.stack([modules[b].weight.detach().abs().float().cpu() for b in g.bn_sources]).mean(0)
            for g in plan.prunable("bn")}


def netslim_keep(model: nn.Module, plan: ChannelPlan, ratio: float) -> dict[str, torch.Tensor]:
    """Kept channel indices per group after removing the ``ratio`` share with the smallest scale factors."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"Network Slimming ratio must be in (0, 1), got {ratio}")
    scores = bn_scores(model, plan)
    if not scores:
        raise ValueError("the model has no prunable BatchNorm channel")
    flat = torch.cat(list(scores.values()))
    n_remove = int(flat.numel() * ratio)
    order = torch.argsort(flat, stable=True)
    removed = torch.zeros(flat.numel(), dtype=torch.bool)
    removed[order[:n_remove]] = True
    threshold = float(flat[order[n_remove - 1]]) if n_remove else 0.0
    keep: dict[str, torch.Tensor] = {}
    start = 0
    for name, s in scores.items():
        gone = removed[start:start + s.numel()]
        start += s.numel()
        kept = (~gone).nonzero().flatten()
        if kept.numel() == 0:  # at least one channel per group survives: its best one
            kept = s.argmax().view(1)
        keep[name] = kept
    logger.info("Network Slimming: threshold |gamma| <= %.4g removes %d of %d channels", threshold, n_remove,
                flat.numel())
    return keep
