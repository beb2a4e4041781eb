"""L1-norm filter pruning (Li et al., ICLR 2017, "Pruning Filters for Efficient ConvNets",
https://arxiv.org/abs/1608.08710): structured, channels physically removed.

Each filter is rated by the sum of the absolute values of its kernel weights, ``s_j = sum |W[j, :, :, :]|``, on
the trained parent; in every prunable channel group (``mtlx_core.prune.groups``) the ``floor(sparsity * size)``
filters with the smallest norms are removed (the same share of every group: Li et al. choose a rate per layer
from a sensitivity analysis, a uniform rate is their simplest setting), at least one filter stays. The
independent strategy: norms are computed once on the parent, not re-computed as layers are pruned. A channel
of a coupled group is written by several convs and rated by the mean of their filter norms; attention masks,
which only multiply a group, do not rate it. Fine-tuning follows the method's prune preset.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from mtlx_core.prune.channels import ChannelPlan
from mtlx_core.prune.method import PruningMethod, Selection, SelectionContext

logger = logging.getLogger(__name__)

L1_FILTER_GRID = (0.5, 0.7, 0.9)


def filter_norms(model: nn.Module, plan: ChannelPlan) -> dict[str, torch.Tensor]:
    """``{group: mean over its writing convs of each filter's L1 norm}`` of every prunable group."""
    modules = dict(model.named_modules())
    out = {}
    for g in plan.prunable():
        convs = [modules[p.conv] for p in g.producers if not p.tied]
        out[g.name] = torch.stack([c.weight.detach().abs().float().sum((1, 2, 3)).cpu() for c in convs]).mean(0)
    return out


def l1_filter_keep(model: nn.Module, plan: ChannelPlan, sparsity: float) -> dict[str, torch.Tensor]:
    """Kept channel indices per group: its ``floor(sparsity * size)`` smallest-norm filters go (ties by index)."""
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"L1-norm filter pruning sparsity must be in (0, 1), got {sparsity}")
    keep = {}
    for name, norms in filter_norms(model, plan).items():
        n_remove = min(int(norms.numel() * sparsity), norms.numel() - 1)
        keep[name] = torch.argsort(norms, stable=True)[n_remove:].sort().values
    return keep


class L1Filter(PruningMethod):
    name = "l1_filter"
    structured = True
    grid = L1_FILTER_GRID

    def select(self, ctx: SelectionContext) -> Selection:
        keep = l1_filter_keep(*ctx.parent(), ctx.sparsity)
        return Selection(keep=keep, details={"rate_per_group": ctx.sparsity})
