"""One Torch-Pruning trace of a model, with what ``derive_channel_plan`` needs besides the dependency graph.

``trace_model(model, x)`` builds ``torch_pruning.DependencyGraph`` on one forward pass and records, in the same
pass, the leaf module that made each autograd node (to name operations and find activation modules), how often
each module ran, the graph nodes of the returned tensors, and the tensor operands autograd does not track (a
buffer or a detached tensor multiplied into a feature map couples channels that Torch-Pruning cannot see).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.overrides import TorchFunctionMode


@dataclass
class Trace:
    """A model traced once (see the module docstring)."""

    dg: tp.DependencyGraph
    names: dict[Any, str]  # module -> name
    fn_module: dict[Any, str]  # grad_fn -> name of the leaf module whose output it is
    calls: Counter[str]
    outputs: list[Any]  # tp nodes of the returned tensors
    untracked: dict[Any, list[tuple[int, ...]]]  # grad_fn -> shapes of operands autograd does not track


class UntrackedOperands(TorchFunctionMode):
    """Records, per autograd node made while active, the shapes of its tensor operands autograd does not track."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: dict[Any, list[tuple[int, ...]]] = {}

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            flat = [a for v in (*args, *kwargs.values()) for a in (v if isinstance(v, list | tuple) else [v])]
            shapes = [tuple(a.shape) for a in flat if isinstance(a, torch.Tensor) and not a.requires_grad]
            if shapes:
                self.shapes.setdefault(out.grad_fn, []).extend(shapes)
        return out

def fn_name(node: Any) -> str:
    fn = node.grad_fn
    return fn.name() if fn is not None and hasattr(fn, "name") else "Unknown"

def describe(trace: Trace, node: Any) -> str:
    """A node as a user reads it: its module's name, or the operation and the module it follows."""
    if node.module in trace.names:
        return f"module {trace.names[node.module]!r}"
    if node.grad_fn in trace.fn_module:
        return f"module {trace.fn_module[node.grad_fn]!r} ({fn_name(node)})"
    stack, seen = list(node.inputs), set()
    while stack:
        up = stack.pop(0)
        if id(up) in seen:
            continue
        seen.add(id(up))
        name = trace.names.get(up.module) or trace.fn_module.get(up.grad_fn)
        if name:
            return f"operation {fn_name(node)} after module {name!r}"
        stack.extend(up.inputs)
    return f"operation {fn_name(node)} on the input"

def trace_model(model: nn.Module, example_input: torch.Tensor) -> Trace:
    names = {m: n for n, m in model.named_modules()}
    fn_module: dict[Any, str] = {}
    calls: Counter[str] = Counter()

    def hook(m: nn.Module, _inp: Any, out: Any) -> None:
        calls[names[m]] += 1
        if isinstance(out, torch.Tensor) and out.grad_fn is not None and out.grad_fn not in fn_module:
            fn_module[out.grad_fn] = names[m]

    returned: dict[str, torch.Tensor] = {}
    operands = UntrackedOperands()

    def forward(m: nn.Module, x: torch.Tensor) -> Any:
        with operands:
            out = m(x)
        if not isinstance(out, Mapping) or not out or not all(isinstance(v, torch.Tensor) for v in out.values()):
            raise ValueError(f"deriving a channel plan needs a model whose forward returns a dict of tensors, "
                             f"{type(model).__name__} returned {type(out).__name__}")
        returned.update(out)
        return out

    handles = [m.register_forward_hook(hook) for m in model.modules() if not any(True for _ in m.children())]
    was_training = model.training
    try:
        with torch.enable_grad():
            dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_input, forward_fn=forward,
                                                       verbose=False)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out_fns = {id(t.grad_fn) for t in returned.values() if t.grad_fn is not None}
    outputs = [n for n in dg.module2node.values()
               if n.type == tp.ops.OPTYPE.OUTPUT or id(n.grad_fn) in out_fns]
    return Trace(dg, names, fn_module, calls, outputs, operands.shapes)

