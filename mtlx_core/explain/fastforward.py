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
``rounding="tie_safe"`` applies both only to graphs without max-unpool (DeepLab: about 2.5x faster forwards;
AOCs within 1e-4 relative of Quantus) and keeps the exact path for the others.
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
from dataclasses import asdict, dataclass, replace
from typing import Any, cast

import torch
from torch import fx, nn
from torch.fx.experimental.proxy_tensor import make_fx

from mtlx_core.explain.conv_pinning import bitwise_batch1, pin_batch1_conv_backends, pool_indices_batch1
from mtlx_core.explain.graph_rewrites import (
    channels_last_max_pool,
    fold_batchnorm,
    index_sources,
    indexed_pools,
    to_channels_last,
)

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
    #: ``exact``: only the settings above; ``tie_safe``: BN folding and channels-last also in every graph without
    #: max-unpool (no tie can move a value to another pixel there, so rows differ from batch-1 eager forwards
    #: by float rounding, ~1e-6 relative: DeepLab's dilated convolutions run about 2.5x faster on CPU);
    #: ``index_safe``: the same, and in graphs with max-unpool everywhere except what the pooling indices depend
    #: on (SegNet-MTAN's shared encoder stays exact and pinned to batch-1 backends, so every index, and thus
    #: every pixel a value lands on, is the eager model's; the decoder and the task branches round differently)
    rounding: str = "exact"

    def __post_init__(self) -> None:
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {self.rounding!r}; valid: {', '.join(ROUNDINGS)}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


ROUNDINGS = ("exact", "tie_safe", "index_safe")


def has_max_unpool(gm: fx.GraphModule) -> bool:
    """Whether the traced graph scatters values by pooling indices (where rounding can flip ties)."""
    return any(n.op == "call_function" and "max_unpool" in str(n.target) for n in gm.graph.nodes)


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
        self._probes: dict[tuple[int, int], torch.Tensor] = {}  # the checks' images, per input size
        self._refs: dict[tuple[int, int], tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]] = {}
        #: (task, H, W) -> the build verified that rows are bit-identical to batch-1 eager forwards
        self.bitwise: dict[tuple[str, int, int], bool] = {}
        #: (task, H, W) -> the graph takes channels-last inputs
        self.channels_last: dict[tuple[str, int, int], bool] = {}
        #: images forwarded per task (for throughput accounting)
        self.n_forwarded: dict[str, int] = {}

    def _reference(self, task: str, hw: tuple[int, int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The eager model's output for ``task`` on the probe of size ``hw``: the batch, and each row forwarded
        alone (computed once per size for every task's checks)."""
        if hw not in self._refs:
            probe = self._probes[hw]
            with torch.inference_mode():
                self._refs[hw] = (self.model(probe), [self.model(probe[i:i + 1]) for i in range(len(probe))])
        full, rows = self._refs[hw]

        def pick(out: dict[str, torch.Tensor]) -> torch.Tensor:
            return torch.cat(list(out.values()), dim=1) if task == ALL_TASKS else out[task]

        return pick(full), [pick(r) for r in rows]

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
            probe = self._probes.setdefault(hw, (x[:3] if x.shape[0] >= 3 else torch.cat([x] * 3)[:3]).contiguous())
            with torch.inference_mode():
                ok = torch.allclose(gm(probe), self._reference(task, hw)[0], rtol=1e-4, atol=1e-5)
            if not ok:
                raise RuntimeError("traced graph disagrees with the eager model at another batch size")
        except Exception as err:  # tracing is an optimisation: fall back to the eager model, loudly
            logger.warning("IROF fast forward for %r falls back to the eager model: %s", task, err)
            return self._eager(task)
        key = (task, *x.shape[-2:])
        self._act_bytes[key] = activation_bytes(gm, batch=2)
        cheap = s.rounding in ("tie_safe", "index_safe") and not has_max_unpool(gm)
        # index_safe with max-unpool: only what the pooling indices depend on stays exact
        keep = index_sources(gm) if s.rounding == "index_safe" and not (cheap or s.fold_bn or s.channels_last) \
            else None
        if s.fold_bn or cheap or keep is not None:
            logger.debug("folded %d BatchNorms into convolutions for %r", fold_batchnorm(gm, keep or set()), task)
        if s.exact_rewrites:
            logger.debug("max poolings routed to the channels-last kernel for %r: %d", task,
                         channels_last_max_pool(gm))
        self.traced[key] = True
        self.channels_last[key] = s.channels_last or cheap
        if keep is not None:
            logger.debug("channels-last weights outside the pooling indices' sources for %r: %d", task,
                         to_channels_last(gm, keep))
        if s.batch1_numerics and not cheap:
            gm = self._pinned_if_exact(gm, task, key, probe, keep)
        if keep is not None and not pool_indices_batch1(gm, probe, {n.name for n in indexed_pools(gm)}):
            logger.warning("IROF fast forward for %r: pooling indices depend on the batch here; index_safe falls back "
                           "to exact rounding", task)
            exact = FastForward(self.model, replace(s, rounding="exact"))
            exact._full, exact._probes, exact._refs = self._full, self._probes, self._refs
            fn_exact = exact._build(task, x)
            self.bitwise[key] = exact.bitwise.get(key, False)
            return fn_exact
        if self.channels_last[key]:
            to_channels_last(gm)
        fn: Callable[[torch.Tensor], torch.Tensor] = gm
        if s.compile:
            fn = torch.compile(gm, dynamic=False)
        return fn

    def _pinned_if_exact(self, gm: fx.GraphModule, task: str, key: tuple[str, int, int],
                         probe: torch.Tensor, only: set[str] | None = None) -> fx.GraphModule:
        """``gm`` with batch-1 conv backends when that makes its rows bit-identical to batch-1 eager forwards.

        Pinning costs speed (batch-1 backends are slower on batches, much slower for dilated convolutions), so a
        pinned graph that still is not bit-identical (e.g. a kernel whose rounding depends on the memory
        alignment of each row) is dropped for the batched kernels, whose rows then differ from batch-1 eager
        forwards by float rounding only. With ``fold_bn``/``channels_last``/``compile`` nothing is bit-identical
        anyway and the pinned graph is kept unchecked (as requested); with ``only`` (``index_safe``) only those
        convolutions are pinned (what pooling indices depend on: their rows stay bit-identical to batch-1 eager
        forwards, so no tie breaks another way) and the rest rounds differently, unchecked.
        """
        s = self.settings
        pinned = fx.GraphModule(gm, copy.deepcopy(gm.graph))
        try:
            logger.debug("conv backends pinned for %r: %s", task, pin_batch1_conv_backends(pinned, probe, only))
        except Exception as err:  # e.g. a PyTorch without _select_conv_backend: batched kernels, logged
            logger.warning("IROF fast forward for %r could not pin batch-1 conv backends: %s", task, err)
            self.bitwise[key] = False
            return gm
        if s.fold_bn or s.channels_last or s.compile or only is not None:
            return pinned
        self.bitwise[key] = bitwise_batch1(pinned, self._reference(task, (key[1], key[2]))[1], probe)
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
        if self.channels_last.get(key) and self.traced.get(key):
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self._fns[key](x).contiguous()
