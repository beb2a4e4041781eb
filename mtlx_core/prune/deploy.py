"""Inference deployment of a multi-task model, for latency measurements of dense and pruned models alike.

``deploy(model, example)`` returns a callable ``x -> {task: prediction}`` that computes what ``model.eval()(x)``
computes, prepared the way a model is shipped for CPU inference:

1. the forward is captured as a graph of ATen ops (``explain.fastforward.trace_all_tasks``: ``make_fx`` on a
   random batch of 2, so no size-1 specialisation): no ``nn.Module`` dispatch, no Python control flow, only
   the ops that run;
2. every inference BatchNorm that follows a convolution is folded into it
   (``mtlx_core.explain.graph_rewrites.fold_batchnorm``): one op fewer per conv and no normalisation pass;
3. the graph is traced to TorchScript and frozen (``torch.jit.freeze``): weights become constants and the ops
   run in the C++ interpreter, without a Python call per op.

The result is checked against the eager model at batch sizes 1 and 3 before it is returned (a clear error
otherwise). Not applied, because they do not pay on these small CPU models (``bench/pruning_speed.py``, 1
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
from mtlx_core.explain.graph_rewrites import fold_batchnorm

logger = logging.getLogger(__name__)

#: what ``deploy`` does, for benchmark output
DEPLOYMENT = "make_fx graph + BN folded into convs + TorchScript trace/freeze"


class Deployed:
    """``x -> {task: prediction}`` through a frozen TorchScript graph; ``folded``: BatchNorms folded away."""

    def __init__(self, fn: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], tasks: tuple[str, ...],
                 folded: int) -> None:
        self.fn = fn
        self.tasks = tasks
        self.folded = folded

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

    ``model`` is put in eval mode and left otherwise unchanged (folding writes private copies). Raises
    ``RuntimeError`` when the deployed graph disagrees with the eager model by more than ``tol`` (mean absolute
    difference relative to the mean output magnitude) at batch 1 or 3.
    """
    model.eval()
    if not getattr(model, "task_names", ()):
        raise ValueError("deploy needs a multi-task model of the registry (with task_names)")
    gen = torch.Generator().manual_seed(0)
    x2 = torch.rand(2, *example.shape[1:], generator=gen, dtype=example.dtype).to(example.device)
    gm, names = trace_all_tasks(model, x2)
    tasks = tuple(names)
    folded = fold_batchnorm(gm)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript deprecation notices
        scripted = torch.jit.freeze(torch.jit.trace(gm, (x2,), check_trace=False).eval())
    deployed = Deployed(scripted, tasks, folded)
    for b in (1, 3):
        probe = torch.rand(b, *example.shape[1:], generator=gen, dtype=example.dtype).to(example.device)
        with torch.inference_mode():
            err = _disagreement(model(probe), deployed(probe))
        if not err <= tol:
            raise RuntimeError(f"deployed graph disagrees with the eager model at batch {b}: relative error {err:.3g}")
    logger.debug("deployed %s: %d BatchNorms folded", type(model).__name__, folded)
    return deployed
