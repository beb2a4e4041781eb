"""Cheaper inference forwards for IROF: one traced, trimmed graph per task, with batch-1 numerics.

IROF forwards thousands of perturbed images and reads one task's output of each, so the engine runs, per
task, a graph that computes only that task (the other heads and MTAN's other attention branches are dead
code), batched, under ``torch.inference_mode``. The graph is captured with ``make_fx(pre_dispatch=True)`` on
real tensors; it is checked against the eager model before use, and the eager model is used (logged) whenever
tracing fails or disagrees.

Batch-1 numerics (``ForwardSettings.batch1_numerics``, default): PyTorch picks a convolution backend per call
from the input's shape (on CPU, a batch of one small image runs the native im2col kernel, a larger batch
oneDNN), and the two round differently. SegNet's max-unpool makes that rounding visible: perturbed images have
flat regions whose conv outputs tie exactly, a tie broken differently moves a decoder value to another pixel,
and IROF scores move by up to ~1e-2. Each convolution of the graph is therefore pinned to the backend that the
eager model uses for ONE image (``torch._C._select_conv_backend`` on the batch-1 shapes); every per-image
computation of the batched graph is then bit-identical to ``model(x[i:i+1])``, which is how Quantus runs it.
The build checks that bit-identity on a probe batch; where pinning does not achieve it (DeepLab's
dilated convolutions: rounding that depends on each row's memory alignment), the graph keeps the batched
kernels, which are faster, and its rows differ from batch-1 forwards by float rounding only (logged).

BN folding and channels-last (off by default) make each forward cheaper but change float rounding, which
max-unpool ties can turn into AOC differences well above 1e-4 on SegNet-MTAN; they are kept as options.
Exact rewrites (``graph_rewrites``, ``ForwardSettings.exact_rewrites``) swap kernels for cheaper ones with the
same bits.

Public API::

    fwd = FastForward(model, ForwardSettings())
    pred = fwd(task_name, x)        # (R, C, H, W): row i bit-identical to model(x[i:i+1])[task_name]
    both = fwd(ALL_TASKS, x)        # every task's output, concatenated over channels (one shared trace)
    fwd.bitwise                     # {(task, H, W): True when the build verified batch-1 bit-identity}
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from torch import fx, nn
from torch.fx.experimental.proxy_tensor import make_fx

from mtlx_core.explain.graph_rewrites import channels_last_max_pool, fold_batchnorm, to_channels_last

logger = logging.getLogger(__name__)
aten = torch.ops.aten
#: pseudo task name: every task output of the model concatenated over channels, in the model's output order
ALL_TASKS = "__all__"


@dataclass(frozen=True)
class ForwardSettings:
    """How IROF's forwards are made cheaper; recorded next to every IROF number."""

    trim_tasks: bool = True
    batch1_numerics: bool = True  # pin every conv to its batch-1 backend: rows bit-identical to batch-1 eager
    fold_bn: bool = False  # cheaper, but changes rounding (see the module docstring)
    channels_last: bool = False  # idem
    exact_rewrites: bool = True  # bit-exact cheaper kernels (``graph_rewrites``: channels-last max pooling)
    compile: bool = False  # torch.compile the trimmed graph; on small CPU models compile time rarely pays

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


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


def pin_batch1_conv_backends(gm: fx.GraphModule, example: torch.Tensor) -> dict[str, int]:
    """Replace every ``conv2d`` by the backend op the eager model runs for ONE image; returns the counts.

    The backend is what ``torch._C._select_conv_backend`` picks for the batch-1 input, recorded by running
    ``example[:1]`` through the graph (it depends on shapes and the thread count, so pin after setting threads).
    """
    inputs: dict[fx.Node, torch.Tensor] = {}
    convs = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is aten.conv2d.default]

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


def bitwise_batch1(fn: Callable[[torch.Tensor], torch.Tensor], ref: Callable[[torch.Tensor], torch.Tensor],
                   probe: torch.Tensor) -> bool:
    """True when every row of ``fn(probe)`` is bit-identical to ``ref(probe[i:i+1])`` (the eager model)."""
    with torch.inference_mode():
        batched = fn(probe)
        return all(torch.equal(batched[i:i + 1], ref(probe[i:i + 1])) for i in range(len(probe)))


def trace_all_tasks(model: nn.Module, example: torch.Tensor) -> tuple[fx.GraphModule, list[str]]:
    """``x -> [model(x)[t] for t in names]`` as one graph of torch ops, and the task names (traced once)."""
    names: list[str] = []

    def outputs(x: torch.Tensor) -> list[torch.Tensor]:
        out = model(x)
        names[:] = list(out)
        return [out[t] for t in names]

    with torch.no_grad(), _shared_fake_mode():
        gm = make_fx(outputs, pre_dispatch=True)(example)
    return gm, names


def _shared_fake_mode() -> contextlib.AbstractContextManager[object]:
    """A tracing context with ONE fake mode for the metadata of every traced value.

    On real tensors ``make_fx`` otherwise creates a ``FakeTensorMode`` per op (each capturing a Python stack
    trace): about two thirds of the tracing time, ~2.5 s per demo model, paid once per explained model. The
    graph is the same either way; a PyTorch without these (private) hooks just traces the slow way.
    """
    try:
        from torch._guards import TracingContext, tracing
        from torch._subclasses.fake_tensor import FakeTensorMode

        return tracing(TracingContext(FakeTensorMode(allow_fallback_kernels=True)))
    except Exception as err:
        logger.debug("tracing without a shared fake mode: %s", err)
        return contextlib.nullcontext()


def task_graph(full: fx.GraphModule, names: list[str], task: str) -> fx.GraphModule:
    """A copy of ``full`` (from ``trace_all_tasks``) returning only ``task``, every other task's ops removed;
    for ``ALL_TASKS``, every task output concatenated over channels in ``names`` order."""
    graph = fx.Graph()
    outs = cast(Any, graph.graph_copy(full.graph, {}, return_output_node=False))
    if task == ALL_TASKS:
        graph.output(graph.call_function(aten.cat.default, (list(outs), 1)))
    else:
        graph.output(outs[names.index(task)])
    gm = fx.GraphModule(full, graph)  # shares the constants with ``full``; rewrites register private copies
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def trace_task(model: nn.Module, task: str, example: torch.Tensor) -> fx.GraphModule:
    """``x -> model(x)[task]`` as a graph of torch ops with every other task's computation removed."""
    full, names = trace_all_tasks(model, example)
    return task_graph(full, names, task)


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
        self._full: dict[tuple[int, int], tuple[fx.GraphModule, list[str]]] = {}  # one trace per input size
        #: (task, H, W) -> the build verified that rows are bit-identical to batch-1 eager forwards
        self.bitwise: dict[tuple[str, int, int], bool] = {}
        #: images forwarded per task (for throughput accounting)
        self.n_forwarded: dict[str, int] = {}

    def _eager(self, task: str) -> Callable[[torch.Tensor], torch.Tensor]:
        if task == ALL_TASKS:
            return lambda x: torch.cat(list(self.model(x).values()), dim=1)
        return lambda x: self.model(x)[task]

    def _build(self, task: str, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        s = self.settings
        if not s.trim_tasks:
            return self._eager(task)
        try:
            example = x[:2] if x.shape[0] >= 2 else x[:1].expand(2, *x.shape[1:])
            hw = (int(x.shape[-2]), int(x.shape[-1]))
            if hw not in self._full:  # batch 2: no size-1 specialisation
                self._full[hw] = trace_all_tasks(self.model, example.contiguous())
            gm = task_graph(*self._full[hw], task)
            probe = x[:3] if x.shape[0] >= 3 else torch.cat([x] * 3)[:3]
            with torch.inference_mode():
                ok = torch.allclose(gm(probe), self._eager(task)(probe), rtol=1e-4, atol=1e-5)
            if not ok:
                raise RuntimeError("traced graph disagrees with the eager model at another batch size")
        except Exception as err:  # tracing is an optimisation: fall back to the eager model, loudly
            logger.warning("IROF fast forward for %r falls back to the eager model: %s", task, err)
            return self._eager(task)
        key = (task, *x.shape[-2:])
        self._act_bytes[key] = activation_bytes(gm, batch=2)
        if s.fold_bn:
            logger.debug("folded %d BatchNorms into convolutions for %r", fold_batchnorm(gm), task)
        if s.exact_rewrites:
            logger.debug("max poolings routed to the channels-last kernel for %r: %d", task,
                         channels_last_max_pool(gm))
        self.traced[key] = True
        if s.batch1_numerics:
            gm = self._pinned_if_exact(gm, task, key, probe)
        if s.channels_last:
            to_channels_last(gm)
        fn: Callable[[torch.Tensor], torch.Tensor] = gm
        if s.compile:
            fn = torch.compile(gm, dynamic=False)
        return fn

    def _pinned_if_exact(self, gm: fx.GraphModule, task: str, key: tuple[str, int, int],
                         probe: torch.Tensor) -> fx.GraphModule:
        """``gm`` with batch-1 conv backends when that makes its rows bit-identical to batch-1 eager forwards.

        Pinning costs speed (batch-1 backends are slower on batches, much slower for dilated convolutions), so a
        pinned graph that still is not bit-identical (e.g. a kernel whose rounding depends on the memory
        alignment of each row) is dropped for the batched kernels, whose rows then differ from batch-1 eager
        forwards by float rounding only. With ``fold_bn``/``channels_last``/``compile`` nothing is bit-identical
        anyway and the pinned graph is kept unchecked (as requested).
        """
        s = self.settings
        pinned = fx.GraphModule(gm, copy.deepcopy(gm.graph))
        try:
            logger.debug("conv backends pinned for %r: %s", task, pin_batch1_conv_backends(pinned, probe))
        except Exception as err:  # e.g. a PyTorch without _select_conv_backend: batched kernels, logged
            logger.warning("IROF fast forward for %r could not pin batch-1 conv backends: %s", task, err)
            self.bitwise[key] = False
            return gm
        if s.fold_bn or s.channels_last or s.compile:
            return pinned
        self.bitwise[key] = bitwise_batch1(pinned, self._eager(task), probe.contiguous())
        if self.bitwise[key]:
            return pinned
        logger.info("IROF fast forward for %r: batch-1 conv backends do not make rows bit-identical to batch-1 "
                    "eager forwards here; using the faster batched kernels (rows differ by float rounding)", task)
        return gm

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
