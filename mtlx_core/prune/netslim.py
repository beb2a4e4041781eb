"""Network Slimming (Liu et al., ICCV 2017, https://arxiv.org/abs/1708.06519; decisions D8, D23).

Sparsity training puts an L1 penalty on the BN scale factors; one global threshold over the prunable channels'
``|gamma|`` then removes the requested share of them. A channel of a coupled group (``mtlx_core.prune.groups``)
is written by several BNs and rated by the mean of their ``|gamma|``; the attention masks' last BN is not a
rating source. Every group keeps at least its best channel.

Three sparsity-training modes (D23; the variant of the method, ``--netslim-mode``), applied by ``BnL1`` as a
training callback built from the run's ``TrainConfig`` (``bn_l1``, ``bn_l1_mode``, ``bn_l1_scope``):

- ``authors``: the sub-gradient ``s * sign(gamma)`` (s = 1e-4) added to every BN's gradient before the Adam step,
  and kept while fine-tuning (what the study's authors ran). Adam divides each update by the parameter's own
  gradient scale, so this is a re-weighted L1: a BN with loss gradients much smaller than ``s`` (MTAN's attention
  paths) shrinks by ``lr`` per step whatever ``s`` is, and the global threshold then strips attention first;
- ``decoupled`` (the demo's default): Adam on the loss, then the proximal step
  ``gamma <- sign(gamma) * max(|gamma| - lr * s', 0)`` on the BNs that rate prunable channels: every channel gets
  the same pressure. ``s'`` is set from a calibrated L1 budget ``B = s' * sum_t lr_t`` (``DECOUPLED_BUDGET``,
  the most a channel without loss gradient can shrink over the run), so it scales with any schedule
  (``docs/pruning.md``); no L1 while fine-tuning;
- ``sgd``: the published recipe's SGD with momentum 0.9 and weight decay 1e-4 for the sparsity phase (lr 0.1 at
  batch 64, scaled linearly to the preset's batch) with the sub-gradient; fine-tuning uses the preset's Adam
  recipe without L1.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mtlx_core.prune.channels import ChannelPlan
from mtlx_core.prune.groups import channel_plan
from mtlx_core.prune.method import PruningMethod, Selection, SelectionContext
from mtlx_core.train.config import BN_L1_MODES, PRESETS, TrainConfig

if TYPE_CHECKING:
    from mtlx_core.train.loop import TrainCallback

logger = logging.getLogger(__name__)

#: the authors' (and the paper's VGG) sub-gradient strength
AUTHORS_S = 1e-4
#: decoupled mode: s' * (sum of the learning rates over the run), calibrated on the demo parent (docs/pruning.md)
DECOUPLED_BUDGET = 1.0
#: sgd mode: Network Slimming's learning rate at its batch size, and its weight decay
SGD_LR_AT_64, SGD_WEIGHT_DECAY = 0.1, 1e-4
NETSLIM_GRID = (0.5, 0.6, 0.7, 0.8, 0.9)


def lr_sum(cfg: TrainConfig) -> float:
    """Sum of the learning rates of every iteration of ``cfg``'s step schedule."""
    step = cfg.lr_step or cfg.iterations + 1
    return sum(cfg.lr * cfg.lr_gamma ** (t // step) for t in range(cfg.iterations))


def netslim_training(cfg: TrainConfig, mode: str) -> dict[str, Any]:
    """``TrainConfig`` overrides that sparsity-train ``cfg``'s model in ``mode`` (D23)."""
    if mode not in BN_L1_MODES:
        raise ValueError(f"unknown Network Slimming mode {mode!r}; valid modes: {', '.join(BN_L1_MODES)}")
    if mode == "authors":
        return {"bn_l1": AUTHORS_S, "bn_l1_mode": mode, "bn_l1_scope": "all", "optimizer": "adam"}
    if mode == "decoupled":
        s_prime = DECOUPLED_BUDGET / lr_sum(cfg)
        return {"bn_l1": float(f"{s_prime:.4g}"), "bn_l1_mode": mode, "bn_l1_scope": "prunable", "optimizer": "adam"}
    return {"bn_l1": AUTHORS_S, "bn_l1_mode": mode, "bn_l1_scope": "all", "optimizer": "sgd",
            "lr": SGD_LR_AT_64 * cfg.batch_size / 64, "weight_decay": SGD_WEIGHT_DECAY}


def rating_bns(model: nn.Module, plan: ChannelPlan) -> list[str]:
    """The BNs whose scale factors rate prunable channels (``bn_l1_scope = "prunable"``)."""
    return sorted({b for g in plan.prunable("bn") for b in g.bn_sources})


class BnL1:
    """Network Slimming's sparsity term as a training callback (stateless; see the module docstring)."""

    def __init__(self, s: float, mode: str, scope: str) -> None:
        if mode not in BN_L1_MODES:
            raise ValueError(f"unknown Network Slimming mode {mode!r}; valid modes: {', '.join(BN_L1_MODES)}")
        self.s, self.mode, self.scope = s, mode, scope
        self._cache: tuple[int, list[nn.Parameter]] | None = None

    def scales(self, model: nn.Module) -> list[nn.Parameter]:
        """The BN scale factors under the penalty (cached per model object)."""
        if self._cache is None or self._cache[0] != id(model):
            if self.scope == "all":
                bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            else:
                modules = dict(model.named_modules())
                bns = [modules[b] for b in rating_bns(model, channel_plan(model))]
            self._cache = (id(model), [m.weight for m in bns if m.weight is not None])
        return self._cache[1]

    def after_backward(self, model: nn.Module, iteration: int) -> None:
        if self.mode == "decoupled":
            return
        for w in self.scales(model):
            if w.grad is not None:
                w.grad.add_(torch.sign(w.detach()), alpha=self.s)

    @torch.no_grad()
    def after_step(self, model: nn.Module, iteration: int, lr: float) -> None:
        if self.mode != "decoupled":
            return
        for w in self.scales(model):
            w.copy_(torch.sign(w) * (w.abs() - lr * self.s).clamp_min(0))

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def bn_scores(model: nn.Module, plan: ChannelPlan) -> dict[str, torch.Tensor]:
    """``{group: mean |gamma| over the group's rating BNs}`` of every prunable group that has a BN."""
    modules = dict(model.named_modules())
    return {g.name: torch.stack([modules[b].weight.detach().abs().float().cpu() for b in g.bn_sources]).mean(0)
            for g in plan.prunable("bn")}


def netslim_select(model: nn.Module, plan: ChannelPlan, ratio: float) -> tuple[dict[str, torch.Tensor], float]:
    """Kept channel indices per group after removing the ``ratio`` share with the smallest scale factors, and
    the global threshold."""
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
    return keep, threshold


def netslim_keep(model: nn.Module, plan: ChannelPlan, ratio: float) -> dict[str, torch.Tensor]:
    """Kept channel indices per group (``netslim_select`` without the threshold)."""
    return netslim_select(model, plan, ratio)[0]


class NetworkSlimming(PruningMethod):
    name = "netslim"
    structured = True
    variants = ("decoupled", "authors", "sgd")  # BN_L1_MODES, the published one first (the default)
    grid = NETSLIM_GRID
    channel_kind = "bn"

    def default_variant(self, parent_cfg: TrainConfig) -> str | None:
        return parent_cfg.bn_l1_mode if parent_cfg.bn_l1 > 0 else self.variants[0]

    def check_parent(self, parent_cfg: TrainConfig, variant: str | None, parent_id: str) -> None:
        if parent_cfg.bn_l1 <= 0:
            logger.warning("parent %s was trained without BN L1 sparsity (bn_l1 = 0): Network Slimming expects a "
                           "sparsity-trained parent", parent_id)
        elif parent_cfg.bn_l1_mode != variant:
            raise ValueError(f"run {parent_id!r} was sparsity-trained in Network Slimming mode "
                             f"{parent_cfg.bn_l1_mode!r}; mode {variant!r} prunes a parent trained in that mode "
                             f"(python -m mtlx_core.train --preset {parent_cfg.preset} --netslim-mode {variant})")

    def finetune_overrides(self, parent_cfg: TrainConfig, variant: str | None) -> dict[str, Any]:
        if variant == "authors":
            return {}  # the parent's L1 stays on while fine-tuning
        if variant == "sgd":  # back to the preset's Adam recipe
            base = PRESETS.get(parent_cfg.preset)
            return {"bn_l1": 0.0, "optimizer": "adam", "lr": base.lr if base else 1e-4,
                    "weight_decay": base.weight_decay if base else 0.0}
        return {"bn_l1": 0.0}

    def training_callbacks(self, cfg: TrainConfig) -> list[TrainCallback]:
        return [BnL1(cfg.bn_l1, cfg.bn_l1_mode, cfg.bn_l1_scope)] if cfg.bn_l1 > 0 else []

    def select(self, ctx: SelectionContext) -> Selection:
        keep, threshold = netslim_select(*ctx.parent(), ctx.sparsity)
        p = ctx.parent_cfg
        return Selection(keep=keep, details={
            "netslim_mode": ctx.variant, "bn_l1": p.bn_l1, "bn_l1_scope": p.bn_l1_scope,
            "finetune_bn_l1": ctx.finetune.bn_l1 > 0, "threshold": threshold})
