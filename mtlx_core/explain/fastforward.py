"""Cheaper inference forwards for IROF: one traced, trimmed graph per task.

IROF forwards thousands of perturbed images and reads one task's output of each, so the engine runs, per
task, a graph that computes only that task (the other heads and MTAN's other attention branches are dead
code), with BatchNorm folded into the preceding convolutions and channels-last weights, under
``torch.inference_mode``. The graph is captured with ``make_fx(pre_dispatch=True)`` on real tensors; it is
checked against the eager model at a second batch size before use, and the eager model is used (logged)
whenever tracing fails or disagrees.

Public API::

    fwd = FastForward(model, ForwardSettings())
    pred = fwd(task_name, x)        # (R, C, H, W), as model(x)[task_name]

Folding BN changes float rounding (not the function); max-pool index ties can turn that into local
output differences of ~1e-4 on random-init networks. ``ForwardSettings(fold_bn=False, channels_last=False)``
gives outputs bit-identical to the eager model's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import fx, nn
from torch.fx.experimental.proxy_tensor import make_fx

logger = logging.getLogger(__name__)
aten = torch.ops.aten


@dataclass(frozen=True)
class ForwardSettings:
    """How IROF's forwards are made cheaper; recorded next to every IROF number."""

    trim_tasks: bool = True
    fold_bn: bool = True
    channels_last: bool = True
    compile: bool = False  # torch.compile the trimmed graph; on small CPU models compile time rarely pays

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _const(gm: fx.GraphModule, node: fx.Node | None) -> torch.Tensor | None:
    if node is None:
        return None
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        raise TypeError("not a constant")
    return getattr(gm, node.target)


def _set_const(gm: fx.GraphModule, name: str, value: torch.Tensor) -> None:
    """Replace a graph constant by a private buffer (never mutates the user's parameters)."""
    if hasattr(gm, name):
        delattr(gm, name)
    gm.register_buffer(name, value)


def fold_batchnorm(gm: fx.GraphModule) -> int:
    """Fold every inference ``batch_norm`` that directly follows a ``conv2d`` into it; returns the count."""
    folded = 0
    for bn in list(gm.graph.nodes):
        if bn.op != "call_function" or bn.target is not aten.batch_norm.default:
            continue
        conv = bn.args[0]
        if (not isinstance(conv, fx.Node) or conv.target is not aten.conv2d.default or len(conv.users) != 1
                or bn.args[5]):  # args[5] = training
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


def to_channels_last(gm: fx.GraphModule) -> None:
    """Give every 4-D constant of the graph (conv weights) a channels-last private copy."""
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            t = getattr(gm, node.target)
            if isinstance(t, torch.Tensor) and t.dim() == 4:
                _set_const(gm, node.target, t.detach().contiguous(memory_format=torch.channels_last))


def trace_task(model: nn.Module, task: str, example: torch.Tensor) -> fx.GraphModule:
    """``x -> model(x)[task]`` as a graph of torch ops with every other task's computation removed."""
    with torch.no_grad():
        gm = make_fx(lambda x: model(x)[task], pre_dispatch=True)(example)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def activation_bytes(gm: fx.GraphModule, batch: int) -> int:
    """Sum of the sizes of every op output of a traced graph, per batch element."""
    total = 0
    for node in gm.graph.nodes:
        meta = node.meta.get("tensor_meta")
        if node.op == "call_function" and meta is not None and hasattr(meta, "shape"):
            total += int(torch.Size(meta.shape).numel()) * torch.empty((), dtype=meta.dtype).element_size()
    return max(1, total // batch)


class FastForward:
    """Per-task inference forwards of a multi-task model; graphs are built lazily per (task, H, W)."""

    def __init__(self, model: nn.Module, settings: ForwardSettings | None = None) -> None:
        self.model = model.eval()
        self.settings = settings or ForwardSettings()
        self._fns: dict[tuple[str, int, int], Callable[[torch.Tensor], torch.Tensor]] = {}
        self.traced: dict[tuple[str, int, int], bool] = {}
        self._act_bytes: dict[tuple[str, int, int], int] = {}
        #: images forwarded per task (for throughput accounting)
        self.n_forwarded: dict[str, int] = {}

    def _eager(self, task: str) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: self.model(x)[task]

    def _build(self, task: str, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        s = self.settings
        if not s.trim_tasks:
            return self._eager(task)
        try:
            example = x[:2] if x.shape[0] >= 2 else x[:1].expand(2, *x.shape[1:])
            gm = trace_task(self.model, task, example.contiguous())  # batch 2: no size-1 specialisation
            probe = x[:3] if x.shape[0] >= 3 else torch.cat([x] * 3)[:3]
            with torch.inference_mode():
                ok = torch.allclose(gm(probe), self.model(probe)[task], rtol=1e-4, atol=1e-5)
            if not ok:
                raise RuntimeError("traced graph disagrees with the eager model at another batch size")
        except Exception as err:  # tracing is an optimisation: fall back to the eager model, loudly
            logger.warning("IROF fast forward for %r falls back to the eager model: %s", task, err)
            return self._eager(task)
        self._act_bytes[(task, *x.shape[-2:])] = activation_bytes(gm, batch=2)
        if s.fold_bn:
            logger.debug("folded %d BatchNorms into convolutions for %r", fold_batchnorm(gm), task)
        if s.channels_last:
            to_channels_last(gm)
        fn: Callable[[torch.Tensor], torch.Tensor] = gm
        if s.compile:
            fn = torch.compile(gm, dynamic=False)
        self.traced[(task, *x.shape[-2:])] = True
        return fn

    def activation_bytes_per_image(self, task: str, x: torch.Tensor) -> int:
        """Bytes of all intermediate tensors of one image's forward (an upper bound of what a chunk needs)."""
        key = (task, int(x.shape[-2]), int(x.shape[-1]))
        if key not in self._fns:
            self._fns[key] = self._build(task, x[:1])
        return self._act_bytes.get(key, 64 * x[0].numel() * x.element_size())

    def __call__(self, task: str, x: torch.Tensor) -> torch.Tensor:
        """``model(x)[task]`` under inference mode, through the prepared graph."""
        key = (task, int(x.shape[-2]), int(x.shape[-1]))
        if key not in self._fns:
            self._fns[key] = self._build(task, x)
        self.n_forwarded[task] = self.n_forwarded.get(task, 0) + int(x.shape[0])
        if self.settings.channels_last and self.traced.get(key):
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self._fns[key](x).contiguous()
