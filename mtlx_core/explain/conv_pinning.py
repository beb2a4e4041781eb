"""Batch-1 convolution backends pinned into a traced graph, and the check that rows are then bit-identical.

PyTorch picks a CPU convolution backend per call from the input's shape; a batch of one image and a larger
batch can round differently. ``pin_batch1_conv_backends`` replaces each ``conv2d`` of a traced graph by the
backend op the eager model runs for ONE image, so each row of a batched forward is computed as the image alone
would be; ``bitwise_batch1`` verifies it (``mtlx_core.explain.fastforward`` uses both).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import fx

aten = torch.ops.aten

_BACKEND_OPS = {"Slow2d", "Mkldnn", "SlowDilated2d"}


def _conv_args(node: fx.Node) -> tuple[Any, Any, Any, list[int], list[int], list[int], int]:
    """``aten.conv2d.default``'s arguments with the defaults filled in."""
    a: list[Any] = list(node.args) + [None] * (7 - len(node.args))
    kw: dict[str, Any] = dict(node.kwargs)
    stride = list(kw.get("stride", a[3]) or [1, 1])
    padding = list(kw.get("padding", a[4]) or [0, 0])
    dilation = list(kw.get("dilation", a[5]) or [1, 1])
    groups = int(kw.get("groups", a[6]) or 1)
    return a[0], a[1], kw.get("bias", a[2]), stride, padding, dilation, groups


def pin_batch1_conv_backends(gm: fx.GraphModule, example: torch.Tensor, only: set[str] | None = None
                             ) -> dict[str, int]:
    """Replace every ``conv2d`` (or only those named in ``only``) by the backend op the eager model runs for ONE
    image; returns the counts.

    The backend is what ``torch._C._select_conv_backend`` picks for the batch-1 input, recorded by running
    ``example[:1]`` through the graph (it depends on shapes and the thread count, so pin after setting threads).
    """
    inputs: dict[fx.Node, torch.Tensor] = {}
    convs = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is aten.conv2d.default
             and (only is None or n.name in only)]

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> object:
            out = super().run_node(n)
            if n in convs:
                inputs[n] = self.env[cast(fx.Node, n.args[0])]
            return out

    with torch.inference_mode():
        Recorder(gm).run(example[:1].contiguous())
    counts: dict[str, int] = {}
    for node in convs:
        x_node, w_node, b_node, stride, padding, dilation, groups = _conv_args(node)
        x = inputs[node]
        w = getattr(gm, str(w_node.target)) if w_node.op == "get_attr" else None
        b = getattr(gm, str(b_node.target)) if isinstance(b_node, fx.Node) and b_node.op == "get_attr" else None
        if w is None or (b_node is not None and b is None):
            continue
        backend = str(torch._C._select_conv_backend(x, w, b, stride, padding, dilation, False, [0, 0], groups,
                                                    None)).rsplit(".", 1)[-1]
        counts[backend] = counts.get(backend, 0) + 1
        if backend not in _BACKEND_OPS or (backend != "Mkldnn" and groups != 1):
            continue
        ksize = list(w.shape[-2:])
        args: tuple[Any, ...]
        if backend == "Mkldnn":
            target, args = aten.mkldnn_convolution.default, (x_node, w_node, b_node, padding, stride, dilation, groups)
        elif backend == "Slow2d":
            target, args = aten._slow_conv2d_forward.default, (x_node, w_node, ksize, b_node, stride, padding)
        else:
            target, args = aten.slow_conv_dilated2d.default, (x_node, w_node, ksize, b_node, stride, padding,
                                                              dilation)
        with gm.graph.inserting_before(node):
            new = gm.graph.call_function(target, args)
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    return counts


def bitwise_batch1(fn: Callable[[torch.Tensor], torch.Tensor], rows: list[torch.Tensor], probe: torch.Tensor
                   ) -> bool:
    """True when every row of ``fn(probe)`` is bit-identical to ``rows[i]``, the eager model's output for
    ``probe[i:i+1]`` forwarded alone."""
    with torch.inference_mode():
        batched = fn(probe)
    return len(rows) == len(probe) and all(torch.equal(batched[i:i + 1], r) for i, r in enumerate(rows))


def pool_indices_batch1(gm: fx.GraphModule, probe: torch.Tensor, pools: set[str]) -> bool:
    """True when the pooling indices of the nodes named in ``pools`` (max poolings returning ``(values,
    indices)``) of every row of ``gm(probe)`` are those of the row forwarded alone: what ``index_safe`` needs
    (the rest of the graph may round differently; no index may)."""
    def indices(x: torch.Tensor) -> list[torch.Tensor]:
        got: list[torch.Tensor] = []

        class Recorder(fx.Interpreter):
            def run_node(self, n: fx.Node) -> object:
                out = super().run_node(n)
                if n.name in pools and isinstance(out, tuple):
                    got.append(out[1])
                return out

        with torch.inference_mode():
            Recorder(gm).run(x)
        return got

    batched = indices(probe.contiguous())
    rows = [indices(probe[i:i + 1].contiguous()) for i in range(len(probe))]
    return bool(batched) and all(torch.equal(b[i:i + 1], r[k]) for k, b in enumerate(batched)
                                 for i, r in enumerate(rows))
