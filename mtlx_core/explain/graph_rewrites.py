"""Rewrites of traced inference graphs (used by ``fastforward`` and ``prune.deploy``).

Exact (same bits, cheaper kernels): :func:`channels_last_max_pool`. Inexact (cheaper, different float
rounding): :func:`fold_batchnorm`, :func:`to_channels_last`, both optionally limited to the nodes outside
:func:`index_sources` (what pooling indices depend on).

PyTorch's CPU max pooling of an NCHW (contiguous) tensor runs a scalar loop per output element; the
channels-last kernel is vectorised over channels and applies the same rule (the first maximum of the window in
row-major order wins; a NaN is taken as the maximum) and returns the same ``h * W + w`` indices, so converting
to channels-last, pooling and converting back gives the same values and indices, bit for bit, in about a third
of the time on small demo models. ``FastForward`` still verifies bit-identity with the eager model on a
probe batch before it relies on a graph.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import fx

aten = torch.ops.aten


def cl_max_pool2d_with_indices(x: torch.Tensor, kernel_size: list[int], stride: list[int] | None = None,
                               padding: list[int] | int = 0, dilation: list[int] | int = 1,
                               ceil_mode: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``aten.max_pool2d_with_indices`` computed by the channels-last kernel; NCHW-contiguous outputs."""
    y, idx = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), kernel_size, stride or kernel_size,
                          padding, dilation, ceil_mode, return_indices=True)
    return y.contiguous(), idx.contiguous()


def cl_max_pool2d(x: torch.Tensor, kernel_size: list[int], stride: list[int] | None = None,
                  padding: list[int] | int = 0, dilation: list[int] | int = 1, ceil_mode: bool = False) -> torch.Tensor:
    """``aten.max_pool2d`` computed by the channels-last kernel (no indices); NCHW-contiguous output."""
    return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), kernel_size, stride or kernel_size,
                        padding, dilation, ceil_mode).contiguous()


_REPLACEMENTS = {aten.max_pool2d_with_indices.default: cl_max_pool2d_with_indices,
                 aten.max_pool2d.default: cl_max_pool2d}


def channels_last_max_pool(gm: fx.GraphModule) -> int:
    """Route every 4-D max pooling of ``gm`` through the channels-last kernel; returns the count."""
    count = 0
    for node in list(gm.graph.nodes):
        fn = _REPLACEMENTS.get(node.target) if node.op == "call_function" else None
        meta = node.args[0].meta.get("val") if fn is not None and isinstance(node.args[0], fx.Node) else None
        if fn is None or meta is None or getattr(meta, "dim", lambda: 0)() != 4:
            continue
        with gm.graph.inserting_before(node):
            new = gm.graph.call_function(fn, node.args, dict(node.kwargs))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        count += 1
    gm.graph.lint()
    gm.recompile()
    return count


def _const(gm: fx.GraphModule, node: Any) -> Any:
    """The tensor a ``get_attr`` node reads (None for None; TypeError for anything else)."""
    if node is None:
        return None
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        raise TypeError("not a constant")
    return getattr(gm, str(node.target))


def _set_const(gm: fx.GraphModule, name: str, value: torch.Tensor) -> None:
    """Replace a graph constant by a private buffer (never mutates the user's parameters)."""
    if hasattr(gm, name):
        delattr(gm, name)
    gm.register_buffer(name, value)


def indexed_pools(gm: fx.GraphModule) -> list[fx.Node]:
    """The max poolings of ``gm`` whose indices are consumed (by a max-unpool)."""
    return [n for n in gm.graph.nodes if n.op == "call_function"
            and n.target in (aten.max_pool2d_with_indices.default, cl_max_pool2d_with_indices)
            and any(u.op == "call_function" and u.args[1:] == (1,) and u.users for u in n.users)]


def index_sources(gm: fx.GraphModule) -> set[str]:
    """Names of the nodes that a used pooling index depends on: every max pooling whose indices are consumed
    (by a max-unpool) and all its ancestors, the graph's input included.

    Only these must round exactly as the eager model does: a different rounding there can break a tie another
    way and move a value to another pixel. Every other node's rounding only changes values by float rounding."""
    seen: set[str] = set()
    stack = indexed_pools(gm)
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        stack += list(node.all_input_nodes)
    return seen


def fold_batchnorm(gm: fx.GraphModule, keep: set[str] | frozenset[str] = frozenset()) -> int:
    """Fold every inference ``batch_norm`` that directly follows a ``conv2d`` into it (except where the conv is
    named in ``keep``); returns the count."""
    folded = 0
    for bn in list(gm.graph.nodes):
        if bn.op != "call_function" or bn.target is not aten.batch_norm.default:
            continue
        conv = bn.args[0]
        if (not isinstance(conv, fx.Node) or conv.target is not aten.conv2d.default or len(conv.users) != 1
                or bn.args[5] or conv.name in keep):  # args[5] = training
            continue
        try:
            w, b = _const(gm, conv.args[1]), _const(gm, conv.args[2] if len(conv.args) > 2 else None)
            gamma, beta, mean, var = (_const(gm, a) for a in bn.args[1:5])
        except TypeError:
            continue
        eps = float(bn.args[7])
        scale = torch.rsqrt(var.double() + eps) * (gamma.double() if gamma is not None else 1.0)
        new_w = (w.double() * scale.view(-1, 1, 1, 1)).to(w.dtype)
        shift = (b.double() if b is not None else 0.0) - mean.double()
        new_b = (shift * scale + (beta.double() if beta is not None else 0.0)).to(w.dtype)
        w_name, b_name = f"_folded_w{folded}", f"_folded_b{folded}"
        _set_const(gm, w_name, new_w.detach().clone())
        _set_const(gm, b_name, new_b.detach().clone())
        with gm.graph.inserting_before(conv):
            w_node, b_node = gm.graph.get_attr(w_name), gm.graph.get_attr(b_name)
        args = list(conv.args) + [None] * max(0, 3 - len(conv.args))
        args[1], args[2] = w_node, b_node
        conv.args = tuple(args)
        bn.replace_all_uses_with(conv)
        gm.graph.erase_node(bn)
        folded += 1
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return folded


def to_channels_last(gm: fx.GraphModule, keep: set[str] | frozenset[str] = frozenset()) -> int:
    """Give every 4-D constant of the graph (conv weights) a channels-last private copy, except constants read by
    a node named in ``keep``; returns the count. A convolution with a channels-last weight runs channels-last
    (oneDNN) and its output stays channels-last downstream."""
    count = 0
    for node in gm.graph.nodes:
        if node.op == "get_attr" and not any(u.name in keep for u in node.users):
            t = getattr(gm, node.target)
            if isinstance(t, torch.Tensor) and t.dim() == 4:
                _set_const(gm, node.target, t.detach().contiguous(memory_format=torch.channels_last))
                count += 1
    return count
