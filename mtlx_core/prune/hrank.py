"""HRank channel selection (Lin et al., CVPR 2020, https://arxiv.org/abs/2002.10179; decision D9).

A round estimates the average rank of every prunable channel's post-ReLU feature maps
(``torch.linalg.matrix_rank`` of each ``H x W`` map, averaged over the images of a few training batches and over
every place the channel is produced: coupled groups have several ReLUs, and the shared MTAN attention convs run
once per task), then removes the lowest-rank half of the remaining channels of every prunable group. Rounds
1-4 leave 1/2, 1/4, 1/8, 1/16 of the channels: 50 / 75 / 87.5 / 93.75 % removed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from mtlx_core.prune.channels import ChannelPlan

logger = logging.getLogger(__name__)

#: target sparsity of rounds 1, 2, 3, 4
ROUND_SPARSITIES: tuple[float, ...] = (0.5, 0.75, 0.875, 0.9375)


def hrank_round(sparsity: float) -> int:
    """The round (1-based) whose result has ``sparsity``; a clear error for any other value."""
    for r, s in enumerate(ROUND_SPARSITIES, start=1):
        if abs(sparsity - s) < 1e-9:
            return r
    raise ValueError(f"HRank sparsity must be one of the round results {', '.join(f'{s:g}' for s in ROUND_SPARSITIES)}"
                     f" (rounds 1-4 each remove half of the remaining filters), got {sparsity:g}")


@torch.no_grad()
def feature_map_ranks(model: nn.Module, plan: ChannelPlan, images: Iterable[torch.Tensor],
                      device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """``{group: average rank per channel}`` of every prunable group with a ReLU, in eval mode."""
    modules = dict(model.named_modules())
    groups = plan.prunable("rank")
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str):
        def record(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            r = torch.linalg.matrix_rank(out.float()).sum(0).double().cpu()  # (B, C) -> (C,)
            sums[name] = sums.get(name, 0) + r
            counts[name] = counts.get(name, 0) + out.shape[0]
        return record

    sources = sorted({s for g in groups for s in g.rank_sources})
    handles = [modules[s].register_forward_hook(hook(s)) for s in sources]
    was_training = model.training
    model.eval()
    n = 0
    try:
        for x in images:
            model(x.to(device))
            n += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if n == 0:
        raise ValueError("feature_map_ranks needs at least one batch")
    missing = [s for s in sources if s not in counts]
    if missing:
        raise ValueError(f"rank sources never ran in the forward pass: {missing[:5]}")
    return {g.name: torch.stack([sums[s] / counts[s] for s in g.rank_sources]).mean(0).float() for g in groups}


def hrank_keep(plan: ChannelPlan, ranks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Kept channel indices per group: the lowest-rank ``size // 2`` channels go (at least one stays).

    Ties go in index order (the lower index is removed first).
    """
    keep = {}
    for name, r in ranks.items():
        size = plan.groups[name].size
        if r.numel() != size:
            raise ValueError(f"group {name}: {r.numel()} ranks for {size} channels")
        order = torch.argsort(r, stable=True)  # ascending: lowest ranks first
        keep[name] = order[size // 2:].sort().values
    return keep
