"""Channel groups and physical channel removal (decision D10).

A *channel group* is a set of channels that must be removed together: every conv (and its BN) that writes
them, and every conv that reads them. A coupled group has several writers, e.g. in SegNet-MTAN the last conv of
encoder stage ``j``, the decoder conv whose output is max-unpooled with that stage's pooling indices, and every
task's attention mask that multiplies them. The plan of a model lists its groups and, for every conv, the
groups its input is the concatenation of (``ChannelPlan.inputs``); ``mtlx_core.prune.groups`` builds the plans.

Removing channels = slicing the state dict (output rows of the writers, input columns of the readers, BN
entries) and rebuilding the model at the smaller size with ``resize_to_state_dict``, exactly as ``load_run``
rebuilds a stored pruned run. ``zero_channels`` is the masked equivalent: it silences the same channels in the
full-size model (BN scale and shift, or conv rows when there is no BN), and the two give the same outputs.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar, cast

import torch
from torch import nn

from mtlx_core.models.surgery import resize_to_state_dict

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=nn.Module)


def is_depthwise(conv: nn.Module) -> bool:
    """A conv with one filter per input channel (``groups == in_channels == out_channels > 1``)."""
    return (isinstance(conv, nn.Conv2d) and conv.groups > 1
            and conv.groups == conv.in_channels == conv.out_channels)


@dataclass(frozen=True)
class Producer:
    """A conv (plus its BN, if any) whose output channels are a group's channels.

    ``tied``: its output multiplies the group's tensor (an attention mask) instead of being it, so it is sliced
    with the group but neither silences it nor rates its channels.
    """

    conv: str
    bn: str | None = None
    tied: bool = False


@dataclass
class ChannelGroup:
    """Channels removed together. ``rank_sources``: modules whose outputs are the post-ReLU maps (HRank)."""

    name: str
    size: int
    producers: list[Producer] = field(default_factory=list)
    rank_sources: list[str] = field(default_factory=list)
    prunable: bool = True

    @property
    def bn_sources(self) -> list[str]:
        """BNs whose scale factors rate the channels (Network Slimming): not the attention masks' last BN."""
        return [p.bn for p in self.producers if p.bn is not None and not p.tied]


@dataclass
class ChannelPlan:
    """All channel groups of a model and, per conv, the groups its input concatenates (in order).

    A depthwise conv reads and writes the same group (its weight has one input column per group).
    ``fixed``: BNs outside every group (they do not directly follow a conv; derived plans only), never sliced.
    """

    groups: dict[str, ChannelGroup]
    inputs: dict[str, tuple[str, ...]]
    fixed: frozenset[str] = frozenset()

    def prunable(self, needs: str = "") -> list[ChannelGroup]:
        """Prunable groups; ``needs="bn"`` / ``"rank"``: only those with BN / rank sources."""
        out = [g for g in self.groups.values() if g.prunable]
        if needs == "bn":
            return [g for g in out if g.bn_sources]
        if needs == "rank":
            return [g for g in out if g.rank_sources]
        return out

    def check(self, model: nn.Module) -> None:
        """Every conv and BN of ``model`` is covered exactly once and all channel counts agree."""
        modules = dict(model.named_modules())
        convs = {n for n, m in modules.items() if isinstance(m, nn.Conv2d)}
        bns = {n for n, m in modules.items() if isinstance(m, nn.BatchNorm2d)}
        out_of: dict[str, str] = {}
        bn_seen: set[str] = set()
        for g in self.groups.values():
            for p in g.producers:
                if p.conv in out_of:
                    raise ValueError(f"conv {p.conv} writes both group {out_of[p.conv]} and {g.name}")
                out_of[p.conv] = g.name
                if modules[p.conv].out_channels != g.size:
                    raise ValueError(f"{p.conv} has {modules[p.conv].out_channels} outputs, group {g.name} {g.size}")
                if p.bn is not None:
                    if modules[p.bn].num_features != g.size:
                        raise ValueError(f"{p.bn} has {modules[p.bn].num_features} channels, group {g.name} {g.size}")
                    bn_seen.add(p.bn)
        if set(out_of) != convs or bn_seen | self.fixed != bns or set(self.inputs) != convs:
            raise ValueError(f"plan does not cover the model: convs without writer group "
                             f"{sorted(convs - set(out_of))}, BNs {sorted(bns - bn_seen - self.fixed)}, convs without "
                             f"input {sorted(convs - set(self.inputs))}")
        for conv, segs in self.inputs.items():
            n = sum(self.groups[s].size for s in segs)
            if n != modules[conv].in_channels:
                raise ValueError(f"{conv} reads {modules[conv].in_channels} channels, plan says {n} ({segs})")
            if is_depthwise(modules[conv]) and segs != (out_of[conv],) and any(
                    self.groups[s].prunable for s in (*segs, out_of[conv])):
                raise ValueError(f"depthwise conv {conv} must read the group it writes ({out_of[conv]}), plan says "
                                 f"{segs}")

    def prunable_channels(self, needs: str = "") -> int:
        return sum(g.size for g in self.prunable(needs))


def _kept(plan: ChannelPlan, keep: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, g in plan.groups.items():
        if name not in keep:
            out[name] = torch.arange(g.size)
            continue
        if not g.prunable:
            raise ValueError(f"group {name} is not prunable")
        idx = torch.as_tensor(keep[name], dtype=torch.long).unique(sorted=True)
        if idx.numel() == 0:
            raise ValueError(f"group {name} would lose all its channels: at least one must survive")
        if idx[0] < 0 or idx[-1] >= g.size:
            raise ValueError(f"group {name} has {g.size} channels, kept indices out of range: {idx.tolist()}")
        out[name] = idx
    return out


def sliced_state_dict(model: nn.Module, plan: ChannelPlan,
                      keep: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``model``'s state dict with only the kept channels of every group (absent groups are kept whole)."""
    kept = _kept(plan, keep)
    modules = dict(model.named_modules())
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for gname, g in plan.groups.items():
        idx = kept[gname]
        if idx.numel() == g.size:
            continue
        for p in g.producers:
            for key in (f"{p.conv}.weight", f"{p.conv}.bias"):
                if key in state:
                    state[key] = state[key].index_select(0, idx.to(state[key].device))
            if p.bn is not None:
                for key in ("weight", "bias", "running_mean", "running_var"):
                    full = f"{p.bn}.{key}"
                    if full in state:
                        state[full] = state[full].index_select(0, idx.to(state[full].device))
    for conv, segs in plan.inputs.items():
        if all(kept[s].numel() == plan.groups[s].size for s in segs) or is_depthwise(modules[conv]):
            continue  # a depthwise conv's input channels are its output rows, sliced with its group
        cols, offset = [], 0
        for s in segs:
            cols.append(kept[s] + offset)
            offset += plan.groups[s].size
        key = f"{conv}.weight"
        state[key] = state[key].index_select(1, torch.cat(cols).to(state[key].device))
    return state


def prune_channels(model: M, plan: ChannelPlan, keep: Mapping[str, torch.Tensor]) -> M:
    """A new, smaller dense model holding only the kept channels (``model`` is left unchanged).

    A registry model is rebuilt from its ``arch_config``; any other module is copied, then resized.
    """
    from mtlx_core.models import build_model
    from mtlx_core.models.base import MultiTaskModel

    state = sliced_state_dict(model, plan, keep)
    param = next(model.parameters())
    fresh = build_model(**model.arch_config) if isinstance(model, MultiTaskModel) else copy.deepcopy(model)
    small = resize_to_state_dict(cast(M, fresh), state)  # depthwise convs: groups follow their channels
    small.load_state_dict(state)
    small.to(param.device).train(model.training)
    return small


@torch.no_grad()
def zero_channels(model: nn.Module, plan: ChannelPlan, keep: Mapping[str, torch.Tensor]) -> nn.Module:
    """Silence every channel not kept, in place: BN scale and shift of its writers, or conv rows without BN.

    In eval mode the silenced channels are exactly zero wherever they are read, so the model computes what
    ``prune_channels`` computes (attention masks need no silencing: they multiply zeros).
    """
    kept = _kept(plan, keep)
    modules = dict(model.named_modules())
    for gname, g in plan.groups.items():
        drop = torch.ones(g.size, dtype=torch.bool)
        drop[kept[gname]] = False
        if not drop.any():
            continue
        for p in g.producers:
            if p.tied:
                continue
            target = modules[p.bn] if p.bn is not None else modules[p.conv]
            target.weight[drop.to(target.weight.device)] = 0
            if target.bias is not None:
                target.bias[drop.to(target.bias.device)] = 0
    return model


def removed_share(plan: ChannelPlan, keep: Mapping[str, torch.Tensor], needs: str = "") -> float:
    """Share of the prunable channels (of groups with ``needs`` sources) that ``keep`` removes."""
    groups = plan.prunable(needs)
    total = sum(g.size for g in groups)
    removed = sum(g.size - int(torch.as_tensor(keep[g.name]).numel()) for g in groups if g.name in keep)
    return removed / total if total else 0.0
