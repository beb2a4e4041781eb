"""What a user of the example does with their own code: train in plain PyTorch, prune four ways, save state dicts.

- ``train``: Adam on cross-entropy (segmentation, -1 = ignore) + L1 on the valid depth pixels, seeded batches;
- ``prune_torch_pruning``: Torch-Pruning's magnitude pruner (group L1 norms), channels physically removed, the
  output convs of the heads kept; saved with Torch-Pruning's own helper (``save_torch_pruning``:
  ``torch_pruning.state_dict``);
- ``prune_torch_unstructured``: ``torch.nn.utils.prune.global_unstructured`` (L1) over every conv; the saved
  state dict keeps the ``weight_orig`` / ``weight_mask`` pairs (the masks are not removed);
- ``prune_mtlx_l1_filter``: mtlx's own L1-norm filter pruning through the channel plan that mtlx derives for the
  registered model with Torch-Pruning's dependency graph (``mtlx_core.prune.derived_plan``);
- ``prune_mtlx_netslim``: mtlx's Network Slimming through the same derived plan: sparsity training of a copy of the
  dense model with mtlx's BN-L1 term (``mtlx_core.prune.netslim.BnL1``, decoupled mode: a proximal step on the
  scale factors of the BNs that rate the plan's prunable channels, budget ``DECOUPLED_BUDGET``), then one global
  ``|gamma|`` threshold removes the requested share of those channels (``netslim_select``).

Each pruned model is fine-tuned briefly before it is saved (the unstructured one with its masks in place).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import DataLoader

from mtlx_core.data.dataset import MTLDataset
from own_model.net import TwoTaskLRASPP

logger = logging.getLogger(__name__)


def batches(data: MTLDataset, batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """Shuffled batches, epoch after epoch, in an order fixed by ``seed``."""
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    while True:
        yield from loader


def loss_of(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    loss = next(iter(out.values())).new_zeros(())
    if "segmentation" in out:
        loss = loss + F.cross_entropy(out["segmentation"], batch["segmentation"], ignore_index=-1)
    if "depth" in out:
        valid = batch["depth"] > 0
        loss = loss + (out["depth"] - batch["depth"]).abs()[valid].mean()
    return loss


def train(net: nn.Module, data: MTLDataset, iterations: int, lr: float = 1e-3, batch_size: int = 8,
          seed: int = 0, after_step: Callable[[int], None] | None = None) -> nn.Module:
    """``iterations`` Adam steps on ``data`` (in place; returns ``net`` in eval mode); ``after_step(i)`` runs after
    each optimiser step (a sparsity term's proximal step, for instance)."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    net.train()
    for i, batch in zip(range(iterations), batches(data, batch_size, seed), strict=False):
        loss = loss_of(net(batch["image"]), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step(i)
        if i % 50 == 0 or i == iterations - 1:
            logger.info("step %d/%d: loss %.4f", i + 1, iterations, loss.item())
    return net.eval()


def init_depth_bias(net: TwoTaskLRASPP, data: MTLDataset, frames: int = 64) -> None:
    """Start the depth head at the mean valid training depth (regression from zero is slow to start)."""
    if "depth" not in net.heads:
        return
    d = torch.cat([data[i]["depth"].flatten() for i in range(min(frames, len(data)))])
    with torch.no_grad():
        head = net.heads["depth"]
        head.high_classifier.bias.fill_(float(d[d > 0].mean()))
        head.low_classifier.bias.zero_()


def output_convs(net: TwoTaskLRASPP) -> list[nn.Module]:
    """The convs that write the task outputs (their channels are the tasks')."""
    return [m for head in net.heads.values() for m in (head.low_classifier, head.high_classifier)]


def prune_torch_pruning(net: TwoTaskLRASPP, ratio: float, example: torch.Tensor) -> TwoTaskLRASPP:
    """A copy of ``net`` with ``ratio`` of the channels of every prunable group removed (Torch-Pruning)."""
    small = copy.deepcopy(net).eval()
    pruner = tp.pruner.MagnitudePruner(small, example, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=ratio, ignored_layers=output_convs(small))
    pruner.step()
    return small


def save_torch_pruning(net: nn.Module, path: Path) -> None:
    """What Torch-Pruning's documentation saves a pruned model with: ``tp.state_dict`` (every module's state)."""
    torch.save(tp.state_dict(net), path)


def prune_torch_unstructured(net: TwoTaskLRASPP, amount: float) -> TwoTaskLRASPP:
    """A copy of ``net`` with the ``amount`` smallest conv weights (global L1) masked by ``torch.nn.utils.prune``;
    the masks stay (``weight_orig`` / ``weight_mask`` in its state dict)."""
    masked = copy.deepcopy(net).eval()
    params = [(m, "weight") for m in masked.modules() if isinstance(m, nn.Conv2d)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    return masked


def prune_mtlx_l1_filter(net: TwoTaskLRASPP, model_name: str, task_channels: dict[str, int], ratio: float,
                         example: torch.Tensor, model_args: dict) -> nn.Module:
    """mtlx's L1-norm filter pruning of ``net`` through its derived channel plan; returns the user's module
    (``.net`` of mtlx's wrapper) with the channels removed."""
    from mtlx_core.prune.channels import prune_channels
    from mtlx_core.prune.derived_plan import derive_channel_plan
    from mtlx_core.prune.l1filter import l1_filter_keep

    wrapped = _wrapped(net, model_name, task_channels, model_args)
    plan = derive_channel_plan(wrapped, example)
    small = prune_channels(wrapped, plan, l1_filter_keep(wrapped, plan, ratio))
    return small.net


def _wrapped(net: nn.Module, model_name: str, task_channels: dict[str, int], model_args: dict) -> nn.Module:
    """mtlx's wrapper of the registered model (``build_model``) holding a copy of ``net``'s weights."""
    from mtlx_core.models import build_model

    wrapped = build_model(model_name, task_channels, **model_args)
    wrapped.net.load_state_dict(net.state_dict())
    return wrapped.eval()


def prune_mtlx_netslim(net: TwoTaskLRASPP, model_name: str, task_channels: dict[str, int], ratio: float,
                       example: torch.Tensor, model_args: dict, data: MTLDataset, iterations: int, lr: float,
                       seed: int = 0) -> tuple[nn.Module, dict[str, float]]:
    """mtlx's Network Slimming of ``net`` through its derived channel plan.

    A copy of ``net`` is sparsity-trained for ``iterations`` Adam steps at ``lr`` with mtlx's decoupled BN-L1 term
    on the BNs that rate the plan's prunable channels (``s' = DECOUPLED_BUDGET / (lr * iterations)``: a channel
    without loss gradient can shrink by the whole budget); then the ``ratio`` share of those channels with the
    smallest ``|gamma|`` (one global threshold; every group keeps its best channel) is removed. Returns the user's
    module with the channels removed, and what the selection measured (``s'``, the threshold, the share of the
    rated scale factors at most 1e-3 before and after the sparsity training)."""
    from mtlx_core.prune.channels import prune_channels
    from mtlx_core.prune.derived_plan import derive_channel_plan
    from mtlx_core.prune.netslim import DECOUPLED_BUDGET, BnL1, bn_scores, netslim_select

    wrapped = _wrapped(net, model_name, task_channels, model_args)
    plan = derive_channel_plan(wrapped, example)

    def near_zero() -> float:
        flat = torch.cat(list(bn_scores(wrapped, plan).values()))
        return float((flat <= 1e-3).float().mean())

    before = near_zero()
    s = DECOUPLED_BUDGET / (lr * iterations)
    term = BnL1(s, "decoupled", "prunable")
    logger.info("Network Slimming: sparsity training, %d steps at lr %g, decoupled BN L1 s' = %.4g on %d BNs",
                iterations, lr, s, len(term.scales(wrapped)))
    train(wrapped.net, data, iterations, lr, seed=seed, after_step=lambda i: term.after_step(wrapped, i, lr))
    wrapped.eval()
    after = near_zero()
    keep, threshold = netslim_select(wrapped, plan, ratio)
    small = prune_channels(wrapped, plan, keep)
    logger.info("Network Slimming: |gamma| <= 1e-3 for %.1f %% of the rated channels before, %.1f %% after the "
                "sparsity training; threshold %.4g", 100 * before, 100 * after, threshold)
    return small.net, {"s": s, "threshold": threshold, "near_zero_before": before, "near_zero_after": after}
