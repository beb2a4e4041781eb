"""HRank channel selection (Lin et al., CVPR 2020, https://arxiv.org/abs/2002.10179; decision D9).

A round estimates the average rank of every prunable channel's post-ReLU feature maps
(``torch.linalg.matrix_rank`` of each ``H x W`` map, averaged over a sample of training images and over every
place the channel is produced: coupled groups have several ReLUs, and the shared MTAN attention convs run once
per task), then removes the lowest-rank half of the remaining channels of every prunable group. Rounds 1-4
leave 1/2, 1/4, 1/8, 1/16 of the channels: 50 / 75 / 87.5 / 93.75 % removed.

The sample is sized in images (``PrunePreset.rank_images``: 256 at paper scale, the authors' 5 batches of 128
images being 640; the demo's 256 of its 320 training images), the first images of the parent's seeded training
order. Average ranks are multiples of 1/N and small maps have few possible ranks, so ties are common: a tie is
broken by the channel's mean activation (the lower one goes first), and the share of channels whose rank is
shared within their group, and the share whose fate the tie-break decided, are logged and recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from mtlx_core.prune.channels import ChannelGroup, ChannelPlan
from mtlx_core.prune.method import PruningMethod, Selection, SelectionContext
from mtlx_core.train.batches import training_batches

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


@dataclass
class RankStats:
    """Per prunable group: average rank and mean activation of every channel, and the images they cover."""

    ranks: dict[str, torch.Tensor]
    activations: dict[str, torch.Tensor]
    images: int


@torch.no_grad()
def feature_map_stats(model: nn.Module, plan: ChannelPlan, images: Iterable[torch.Tensor],
                      device: str | torch.device = "cpu") -> RankStats:
    """Average rank and mean activation of every channel of every prunable group with a ReLU, in eval mode."""
    modules = dict(model.named_modules())
    groups = plan.prunable("rank")
    sums: dict[str, torch.Tensor] = {}
    acts: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str):
        def record(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            r = torch.linalg.matrix_rank(out.float()).sum(0).double().cpu()  # (B, C) -> (C,)
            sums[name] = sums.get(name, 0) + r
            acts[name] = acts.get(name, 0) + out.float().mean((2, 3)).sum(0).double().cpu()
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
            n += x.shape[0]
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if n == 0:
        raise ValueError("feature_map_ranks needs at least one image")
    missing = [s for s in sources if s not in counts]
    if missing:
        raise ValueError(f"rank sources never ran in the forward pass: {missing[:5]}")

    def mean(store: dict[str, torch.Tensor], g: ChannelGroup) -> torch.Tensor:
        return torch.stack([store[s] / counts[s] for s in g.rank_sources]).mean(0).float()

    return RankStats({g.name: mean(sums, g) for g in groups}, {g.name: mean(acts, g) for g in groups}, n)


def feature_map_ranks(model: nn.Module, plan: ChannelPlan, images: Iterable[torch.Tensor],
                      device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """``{group: average rank per channel}`` of every prunable group with a ReLU, in eval mode."""
    return feature_map_stats(model, plan, images, device).ranks


def _order(rank: torch.Tensor, activation: torch.Tensor | None) -> torch.Tensor:
    """Channels from first to last removed: ascending rank, ties by ascending mean activation, then index."""
    if activation is None:
        return torch.argsort(rank, stable=True)
    by_act = torch.argsort(activation, stable=True)
    return by_act[torch.argsort(rank[by_act], stable=True)]


def hrank_keep(plan: ChannelPlan, ranks: dict[str, torch.Tensor],
               activations: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Kept channel indices per group: the lowest-rank ``size // 2`` channels go (at least one stays); ties
    are broken by mean activation when given (the lower one goes), else by index (the lower one goes)."""
    keep = {}
    for name, r in ranks.items():
        size = plan.groups[name].size
        if r.numel() != size:
            raise ValueError(f"group {name}: {r.numel()} ranks for {size} channels")
        order = _order(r, None if activations is None else activations[name])
        keep[name] = order[size // 2:].sort().values
    return keep


def tie_shares(plan: ChannelPlan, ranks: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(share of channels whose average rank another channel of the group shares, share of channels in the tied
    block at the cut: those whose removal the tie-break decided)."""
    tied = decided = total = 0
    for name, r in ranks.items():
        size = plan.groups[name].size
        _, inverse, counts = torch.unique(r, return_inverse=True, return_counts=True)
        tied += int((counts[inverse] > 1).sum())
        if size // 2 > 0:
            cut = torch.sort(r).values[size // 2 - 1: size // 2 + 1]
            if cut.numel() == 2 and cut[0] == cut[1]:
                decided += int((r == cut[0]).sum())
        total += size
    return (tied / total, decided / total) if total else (0.0, 0.0)


def rank_sample(ctx: SelectionContext) -> Iterator[torch.Tensor]:
    """The first ``min(rank_images, training images)`` images of the parent's seeded training order."""
    cfg, ds = ctx.finetune, ctx.train_ds
    n = min(ctx.preset.rank_images, len(ds))
    n_batches = -(-n // cfg.batch_size)
    left = n
    for b in training_batches(ds, cfg.batch_size, cfg.seed, 0, n_batches, getattr(ds, "seeded_augment", None)):
        x = b["image"][:left]
        left -= x.shape[0]
        yield x
        if left <= 0:
            break


class HRank(PruningMethod):
    name = "hrank"
    structured = True
    grid = ROUND_SPARSITIES
    channel_kind = "rank"

    def check_sparsity(self, sparsity: float) -> None:
        hrank_round(sparsity)

    def previous_level(self, sparsity: float) -> float | None:
        r = hrank_round(sparsity)
        return ROUND_SPARSITIES[r - 2] if r > 1 else None

    def select(self, ctx: SelectionContext) -> Selection:
        model, plan = ctx.parent()
        stats = feature_map_stats(model, plan, rank_sample(ctx), ctx.device)
        keep = hrank_keep(plan, stats.ranks, stats.activations)
        tied, decided = tie_shares(plan, stats.ranks)
        logger.info("HRank round %d: ranks on %d images; %.1f %% of the channels share their average rank with "
                    "another of their group, the tie-break (mean activation) decided %.1f %%",
                    hrank_round(ctx.sparsity), stats.images, 100 * tied, 100 * decided)
        return Selection(keep=keep, details={"round": hrank_round(ctx.sparsity), "rank_images": stats.images,
                                             "tie_share": tied, "tie_decided_share": decided})
