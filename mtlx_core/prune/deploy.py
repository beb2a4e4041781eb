"""Inference deployment of a multi-task model, for latency measurements of dense and pruned models alike.

``deploy(model, example)`` returns a callable ``x -> {task: prediction}`` that computes what ``model.eval()(x)``
computes, prepared the way a model is shipped for CPU inference:

1. the forward is captured as a graph of ATen ops (``explain.fastforward.trace_all_tasks``: ``make_fx`` on a
   random batch of 2, so no size-1 specialisation): no ``nn.Module`` dispatch, no Python control flow, only
   the ops that run;
2. every inference BatchNorm that follows a convolution is folded into it
   (``mtlx_core.explain.graph_rewrites.fold_batchnorm``): one op fewer per conv and no normalisation pass;
3. the graph is traced to TorchScript and frozen (``torch.jit.freeze``, with its numeric passes): weights become
   constants and the ops run in the C++ interpreter, without a Python call per op.

The result is checked against the eager model at batch sizes 1 and 3 before it is returned. Folding changes float
rounding, and in a network whose max-pooling indices are used (SegNet's max-unpool) a rounding change can break a
tie another way and move values to other pixels. Where many pooled values are exactly tied, as in a model with
many dead channels (BN scale factors driven to zero by Network Slimming's sparsity training: the channel is one
constant), that moves enough pixels to fail the check. The deployment then falls back, in order (``FORMS``):
BN folded only where no pooling index depends on the conv (``graph_rewrites.index_sources``), then nothing folded
(both frozen without the numeric passes, which would fold the rest again); ``Deployed.form`` says which form passed
(logged), and a clear error comes only when none does.

Not applied, because they do not pay on these small CPU models (``bench/pruning_speed.py``, 1
thread, demo SegNet-MTAN at 64x96): channels-last (the tiny-channel convs take ATen's im2col path, which
channels-last slows down), ``torch.jit.optimize_for_inference`` (MKL-DNN convs: slower at these channel counts)
and ``torch.compile`` (faster at batch 8, but about two minutes of compilation per model and batch size on 2
cores).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import torch
from torch import nn

from mtlx_core.explain.fastforward import trace_all_tasks
from mtlx_core.explain.graph_rewrites import fold_batchnorm, index_sources

logger = logging.getLogger(__name__)

#: what ``deploy`` does, for benchmark output and ``cost_settings`` (the first of ``FORMS``)
DEPLOYMENT = "make_fx graph + BN folded into convs + TorchScript trace/freeze"
#: the deployed forms ``deploy`` tries, in order: every BN folded; folded except where a pooling index depends on
#: the conv; nothing folded
FORMS: dict[str, str] = {
    "folded": DEPLOYMENT,
    "index_safe": "make_fx graph + BN folded into convs that no pooling index depends on + TorchScript trace/freeze",
    "unfolded": "make_fx graph + TorchScript trace/freeze"}


class Deployed:
    """``x -> {task: prediction}`` through a frozen TorchScript graph; ``folded``: BatchNorms folded away;
    ``form``: the key of ``FORMS`` that passed the check."""

    def __init__(self, fn: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], tasks: tuple[str, ...],
                 folded: int, form: str = "folded") -> None:
        self.fn = fn
        self.tasks = tasks
        self.folded = folded
        self.form = form

    @property
    def description(self) -> str:
        return FORMS[self.form]

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            return dict(zip(self.tasks, self.fn(x), strict=True))


def _disagreement(ref: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> float:
    """Mean absolute difference relative to the mean reference magnitude, worst task.

    A mean, not a maximum: folding BN changes float rounding, and where two pooled values are nearly tied the
    other one can win, which moves a few output pixels by much more than the rounding (the unpooled value lands
    elsewhere); a wrong graph moves them all.
    """
    worst = 0.0
    for t, r in ref.items():
        scale = max(float(r.abs().mean()), 1e-30)
        worst = max(worst, float((r - out[t]).abs().mean()) / scale)
    return worst


def deploy(model: nn.Module, example: torch.Tensor, *, tol: float = 1e-3) -> Deployed:
    """The inference-deployed form of ``model`` for inputs shaped like ``example`` (any batch size).

    ``model`` is put in eval mode and left otherwise unchanged (folding writes private copies). Tries ``FORMS`` in
    order and returns the first whose graph agrees with the eager model within ``tol`` (mean absolute difference
    relative to the mean output magnitude) at batch 1 and 3; ``RuntimeError`` when none does.
    """
    model.eval()
    if not getattr(model, "task_names", ()):
        raise ValueError("deploy needs a multi-task model of the registry (with task_names)")
    gen = torch.Generator().manual_seed(0)
    x2 = torch.rand(2, *example.shape[1:], generator=gen, dtype=example.dtype).to(example.device)
    probes = [torch.rand(b, *example.shape[1:], generator=gen, dtype=example.dtype).to(example.device)
              for b in (1, 3)]
    with torch.inference_mode():
        refs = [model(p) for p in probes]
    failures: list[str] = []
    for form in FORMS:
        gm, names = trace_all_tasks(model, x2)  # a fresh graph per form: folding rewrites it
        if form == "index_safe":
            keep = index_sources(gm)
            if not keep:  # no pooling index is used: the same graph as "folded"
                continue
            folded = fold_batchnorm(gm, keep)
        else:
            folded = fold_batchnorm(gm) if form == "folded" else 0
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript deprecation notices
            # freezing's numeric passes fold conv-BN (and conv-add/mul) pairs too: only the first form may run them
            scripted = torch.jit.freeze(torch.jit.trace(gm, (x2,), check_trace=False).eval(),
                                        optimize_numerics=form == "folded")
        deployed = Deployed(scripted, tuple(names), folded, form)
        errs = [_disagreement(r, deployed(p)) for r, p in zip(refs, probes, strict=True)]
        bad = [(p.shape[0], e) for p, e in zip(probes, errs, strict=True) if not e <= tol]
        if not bad:
            if failures:
                logger.warning("deployed %s as %r (%s): %s", type(model).__name__, form, FORMS[form],
                               "; ".join(failures))
            logger.debug("deployed %s (%s): %d BatchNorms folded", type(model).__name__, form, folded)
            return deployed
        failures.append(f"form {form!r} disagrees with the eager model at batch {bad[0][0]}: relative error "
                        f"{bad[0][1]:.3g}")
    raise RuntimeError("deployed graph disagrees with the eager model in every form: " + "; ".join(failures))
