"""Channel plans of any CNN, derived from Torch-Pruning's dependency graph (issue 20).

``derive_channel_plan(model, example_input)`` traces ``model`` once with ``torch_pruning.DependencyGraph`` (its
forward must return a dict of tensors) and turns every coupled set of conv output channels into one
``ChannelGroup`` of ``mtlx_core.prune.channels``:

- producers: every ``nn.Conv2d`` that writes the set's channels one to one (residual additions, products and
  depthwise convs couple them; a depthwise conv reads and writes the same group), each with the
  ``nn.BatchNorm2d`` that directly follows it (Network Slimming's rating BN);
- a producer that only gates the set (conv [-> BN] -> sigmoid / hard-sigmoid -> product: MTAN-style attention
  masks, squeeze-and-excitation, LR-ASPP's scale branch) is ``tied``: it is sliced with the set but neither
  rates nor silences it. Removing channel c of a gated tensor together with channel c of its gate is exact;
- readers: every conv's input is the concatenation of groups that Torch-Pruning's index mapping gives
  (``torch.cat``: a reader with several input parts, ``ChannelPlan.inputs``); the image is an unprunable part;
- rank sources (HRank): the activation module right after a producer (through its BN and a residual sum), when
  that module runs once per forward pass.

What is sound. Torch-Pruning follows autograd, so it sees every differentiable data path. A set is kept whole
(``prunable=False``, logged with the reason) when the plan cannot represent it or the graph may hide part of
its coupling: it reaches a returned tensor (the output convs and whatever is coupled to them); it touches a
layer with parameters other than ``Conv2d`` / ``BatchNorm2d`` (Linear, GroupNorm, LayerNorm, PReLU,
ConvTranspose, free parameters), a grouped conv that is not depthwise, a BN that does not directly follow a
conv, a channel split, slice, view or reshape, an operation outside ``CHANNELWISE`` (pointwise arithmetic and
activations, pooling, interpolation, padding) or a reduction over channels; an operation with an operand
that autograd does not track and that has channels, or a concatenation of one (a buffer, a detached tensor);
a producer coupled with part of its channels only; a set whose producers are all gates. Each of those convs
then writes a group of its own that is not prunable. Everything else is prunable, products included:
Torch-Pruning couples both operands of an element-wise product channel by channel, which is what the
hand-written plans do for MTAN's attention masks (tied producers).

One coupling cannot be made safe by keeping sets whole: ``max_unpool2d`` takes its indices from a max-pool
elsewhere in the network, the pooled and the unpooled channels must go together and autograd does not link
them. A model that unpools with indices gets a ``ValueError`` naming the operation (SegNet-MTAN keeps its
hand-written plan, ``mtlx_core.prune.groups``).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from mtlx_core.prune.channels import ChannelGroup, ChannelPlan, Producer, is_depthwise
from mtlx_core.prune.tp_trace import Trace, describe, fn_name, trace_model

logger = logging.getLogger(__name__)

#: autograd names (prefixes) of operations that map channel c to channel c
CHANNELWISE = ("Add", "Sub", "Mul", "Div", "Neg", "Relu", "Threshold", "Hardtanh", "Hardswish", "Hardsigmoid",
               "Sigmoid", "Tanh", "Silu", "Gelu", "LeakyRelu", "Elu", "Celu", "Selu", "Softplus", "Mish", "Clamp",
               "Clone", "Exp", "Pow", "Sqrt", "Rsqrt", "Abs", "MaxPool", "AvgPool", "AdaptiveAvgPool",
               "AdaptiveMaxPool", "Upsample", "ConstantPadNd", "ReflectionPad", "ReplicationPad", "ToCopy", "Alias")
#: reductions, channel-wise when not over dim 1
REDUCTIONS = ("Mean", "Sum", "Amax", "Amin")
GATES = ("Sigmoid", "Hardsigmoid")
ACTIVATIONS = ("Relu", "Hardtanh", "Hardswish", "Silu", "Gelu", "LeakyRelu", "Elu", "Celu", "Selu", "Mish",
               "Softplus")


@dataclass
class _Set:
    """One Torch-Pruning group rooted at a conv's output channels, read as our plan would need it."""

    root: str
    size: int
    producers: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)  # conv -> (idxs, root idxs)
    readers: list[tuple[str, list[int], list[int]]] = field(default_factory=list)
    bns: list[tuple[str, list[int]]] = field(default_factory=list)
    nodes: list[Any] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _refuse_hidden_couplings(trace: Trace) -> None:
    for node in trace.dg.module2node.values():
        if "MaxUnpool" in fn_name(node):
            raise ValueError(
                f"Torch-Pruning cannot follow the coupling of {describe(trace, node)}: max_unpool2d takes its "
                f"indices from a max-pool elsewhere in the network, whose channels must be removed together with "
                f"the unpooled tensor's, and autograd does not link the two. This model needs a hand-written "
                f"channel plan (see mtlx_core.prune.groups)")


def _op_problem(trace: Trace, node: Any) -> str | None:
    """Why an element-wise or concatenation node may hide or break a channel coupling, or None."""
    name, fn = fn_name(node), node.grad_fn
    untracked = trace.untracked.get(fn, [])
    if node.type == tp.ops.OPTYPE.CONCAT:
        return f"{describe(trace, node)} concatenates a tensor that autograd does not track" if untracked else None
    if name.startswith(REDUCTIONS):
        dims = getattr(fn, "_saved_dim", None)
        ndim = len(getattr(fn, "_saved_self_sym_sizes", ()) or ())
        if dims is None or not ndim or 1 in {d % ndim for d in dims}:
            return f"{describe(trace, node)} may reduce over channels"
        return None
    if not name.startswith(CHANNELWISE):
        return f"{describe(trace, node)} is not a channel-wise operation"
    if any(len(s) >= 3 and s[-3] > 1 for s in untracked):
        return f"{describe(trace, node)} has an operand with channels that autograd does not track (a buffer or a " \
               f"detached tensor)"
    return None



def _analyse(trace: Trace, conv: nn.Conv2d) -> _Set:
    dg = trace.dg
    group = dg.get_pruning_group(conv, dg.get_pruner_of_module(conv).prune_out_channels,
                                 list(range(conv.out_channels)))
    s = _Set(trace.names[conv], conv.out_channels)
    for item in group.items:
        dep, idxs, root = item.dep, list(item.idxs), list(item.root_idxs)
        node, mod = dep.target, dep.target.module
        if not (isinstance(mod, nn.Conv2d) and dep.handler.__name__ == "prune_in_channels"):
            s.nodes.append(node)  # the nodes that carry the set's channels (a reader only takes them in)
        if isinstance(mod, nn.Conv2d):
            name = trace.names[mod]
            if mod.groups > 1 and not is_depthwise(mod):
                s.problems.append(f"grouped conv {name!r} (groups={mod.groups})")
            elif dep.handler.__name__ == "prune_out_channels":
                s.producers[name] = (idxs, root)
            else:
                s.readers.append((name, idxs, root))
        elif isinstance(mod, nn.BatchNorm2d):
            s.bns.append((trace.names[mod], idxs))
        elif node.type in (tp.ops.OPTYPE.ELEMENTWISE, tp.ops.OPTYPE.CONCAT):
            problem = _op_problem(trace, node)
            if problem:
                s.problems.append(problem)
        elif node.type == tp.ops.OPTYPE.SLICE and getattr(mod, "dim", 1) not in (1, -3):
            continue  # a spatial crop
        elif node.type not in (tp.ops.OPTYPE.EXPAND, tp.ops.OPTYPE.OUTPUT):
            s.problems.append(f"{describe(trace, node)} ({node.type.name.lower()}) is outside what a channel "
                              f"plan represents")
    return s


def _check_layout(s: _Set, modules: dict[str, nn.Module], bn_of: dict[str, str]) -> None:
    """Add a problem for every producer, reader or BN that does not map channel c of the set to c."""
    full = list(range(s.size))
    for conv, (idxs, root) in s.producers.items():
        if modules[conv].out_channels != s.size or sorted(zip(idxs, root, strict=True)) != [(i, i) for i in full]:
            s.problems.append(f"conv {conv!r} is coupled with part of its output channels")
    for conv, idxs, root in s.readers:
        pairs = sorted(zip(idxs, root, strict=True))
        off = pairs[0][0] if pairs else 0
        if pairs != [(off + i, i) for i in full]:
            s.problems.append(f"conv {conv!r} reads the channels of {s.root!r} out of order or in part")
    mine = {bn_of[c] for c in s.producers if c in bn_of}
    for bn, idxs in s.bns:
        if bn not in mine or sorted(idxs) != full:
            s.problems.append(f"BatchNorm {bn!r} does not directly follow a conv of the set")


def _walk(node: Any, steps: int = 5) -> list[Any]:
    """The nodes after ``node`` while the path does not branch."""
    path = []
    for _ in range(steps):
        if len(node.outputs) != 1:
            break
        node = node.outputs[0]
        path.append(node)
    return path


def _is_gate(trace: Trace, conv: nn.Module) -> bool:
    gated = False
    for node in _walk(trace.dg.module2node[conv]):
        name = fn_name(node)
        if isinstance(node.module, nn.BatchNorm2d) or name.startswith(("Upsample", "Expand")):
            continue
        if name.startswith(GATES):
            gated = True
            continue
        return gated and name.startswith("Mul")
    return False


def _rank_source(trace: Trace, conv: nn.Module) -> str | None:
    for node in _walk(trace.dg.module2node[conv], 4):
        name = fn_name(node)
        if isinstance(node.module, nn.BatchNorm2d) or name.startswith("Add"):
            continue
        owner = trace.fn_module.get(node.grad_fn)
        return owner if owner and name.startswith(ACTIVATIONS) and trace.calls[owner] == 1 else None
    return None


def _bn_after_conv(trace: Trace) -> dict[str, str]:
    """conv -> the BatchNorm2d whose only input it is (one per conv)."""
    out: dict[str, str] = {}
    for mod, node in trace.dg.module2node.items():
        if isinstance(mod, nn.BatchNorm2d) and len({id(n) for n in node.inputs}) == 1:  # a shared BN: twice
            up = node.inputs[0].module
            if isinstance(up, nn.Conv2d) and up.out_channels == mod.num_features:
                conv = trace.names[up]
                if conv not in out:
                    out[conv] = trace.names[mod]
    return out


def derive_channel_plan(model: nn.Module, example_input: torch.Tensor) -> ChannelPlan:
    """The channel plan of ``model`` from Torch-Pruning's dependency graph (see the module docstring)."""
    trace = trace_model(model, example_input)
    _refuse_hidden_couplings(trace)
    modules = dict(model.named_modules())
    bn_of = _bn_after_conv(trace)
    sets: list[_Set] = []
    seen: set[str] = set()
    for name, m in modules.items():
        if isinstance(m, nn.Conv2d) and m in trace.dg.module2node and name not in seen:
            s = _analyse(trace, m)
            _check_layout(s, modules, bn_of)
            seen.update(s.producers)
            sets.append(s)
    writers = Counter(c for s in sets for c in s.producers)
    groups: dict[str, ChannelGroup] = {}
    parts: dict[str, list[tuple[int, int, str]]] = {}
    inputs: dict[str, tuple[str, ...]] = {}
    outputs = {id(n) for n in trace.outputs}
    order = {n: i for i, n in enumerate(modules)}
    kept_whole: list[str] = []
    for s in sets:
        shared = [c for c in s.producers if writers[c] > 1]
        if shared:
            s.problems.append(f"convs {shared} are coupled with several sets")
        if s.problems:
            kept_whole.append(f"{s.root}: {'; '.join(s.problems[:3])}")
            continue
        producers = [Producer(c, bn_of.get(c), _is_gate(trace, modules[c]))
                     for c in sorted(s.producers, key=order.__getitem__)]
        name = producers[0].conv
        ranks = [r for p in producers if not p.tied for r in [_rank_source(trace, modules[p.conv])] if r]
        reason = ("it reaches the model's output" if any(id(n) in outputs for n in s.nodes)
                  else "all its producers are gates" if all(p.tied for p in producers) else "")
        if reason:
            kept_whole.append(f"{name}: {reason}")
        groups[name] = ChannelGroup(name, s.size, producers, sorted(set(ranks)), prunable=not reason)
        for conv, idxs, _ in s.readers:
            parts.setdefault(conv, []).append((min(idxs), s.size, name))
        for p in producers:
            if is_depthwise(modules[p.conv]):
                inputs[p.conv] = (name,)
    written = {p.conv for g in groups.values() for p in g.producers}
    for name, m in modules.items():
        if isinstance(m, nn.Conv2d) and name not in written:  # kept whole, or not on the traced path
            groups[name] = ChannelGroup(name, m.out_channels, [Producer(name, bn_of.get(name))], prunable=False)
        if isinstance(m, nn.Conv2d) and name not in inputs:
            inputs[name] = _input_parts(name, m.in_channels, parts.get(name, []), groups)
    if kept_whole:
        logger.info("derived channel plan of %s: %d sets kept whole: %s", type(model).__name__, len(kept_whole),
                    " | ".join(kept_whole))
    bns = {n for n, m in modules.items() if isinstance(m, nn.BatchNorm2d)}
    plan = ChannelPlan(groups, inputs, fixed=frozenset(bns - set(bn_of.values())))
    plan.check(model)
    logger.info("derived channel plan of %s: %d groups, %d prunable (%d channels)", type(model).__name__,
                len(groups), len(plan.prunable()), plan.prunable_channels())
    return plan


def _input_parts(conv: str, n: int, parts: list[tuple[int, int, str]], groups: dict[str, ChannelGroup]
                 ) -> tuple[str, ...]:
    """The groups ``conv`` reads, in order; channels no set accounts for become unprunable parts."""
    out, at = [], 0
    for off, size, gname in sorted(parts):
        if off < at:
            raise ValueError(f"conv {conv!r}: input channels {off}..{off + size - 1} belong to two channel groups")
        if off > at:
            out.append(_gap(conv, at, off, groups))
        out.append(gname)
        at = off + size
    if at < n:
        out.append(_gap(conv, at, n, groups))
    return tuple(out)


def _gap(conv: str, start: int, end: int, groups: dict[str, ChannelGroup]) -> str:
    name = f"{conv}:in[{start}:{end}]"
    groups[name] = ChannelGroup(name, end - start, prunable=False)
    return name


def default_example_input(model: nn.Module, side: int = 64) -> torch.Tensor:
    """A zero RGB image to trace ``model`` with: ``side`` rounded up to the model's ``input_multiple``."""
    cfg = getattr(model, "arch_config", None)
    multiple = getattr(model, "input_multiple", None) or (cfg.get("input_multiple") if isinstance(cfg, dict)
                                                          else None) or 1
    multiple = int(multiple)
    side = multiple * max(1, -(-side // multiple))
    param = next(model.parameters(), None)
    return torch.zeros(1, 3, side, side, device=param.device if param is not None else None,
                       dtype=param.dtype if param is not None else None)
