"""Measured latency of a model in its deployed form (D27): batch 1, median of at least 20 forwards after warm-up,
one CPU thread; on a GPU too when the study runs on one.

``deployed form``: ``mtlx_core.prune.deploy`` (graph captured, BN folded into convolutions, TorchScript frozen),
the same for every model unless its check makes it fall back (a model with many nearly tied pooled values:
``cost_settings`` then records the form used). Structured pruned runs are physically smaller networks
(``load_run`` rebuilds them at their size), so their latency is what the removal buys; unstructured (masked)
models are timed as the dense network they are: zeroed weights are still computed, no sparse kernel is used.

Public API::

    median_latency(fns, x, repeats, warmup, sync)   # median seconds of every callable, timed interleaved
    model_latency(model, input_shape, device, settings)  # median milliseconds of one model, deployed, batch 1
    deployed_latency(...)                           # the same and the deployed form that passed its check
    LatencySettings()                               # runs, warm-up, CPU threads, batch
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mtlx_core.prune.deploy import DEPLOYMENT, deploy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatencySettings:
    """How latency is measured (D27: batch 1, one CPU thread, median of at least 20 runs after warm-up)."""

    runs: int = 20
    warmup: int = 3  # TorchScript's profiling executor optimises during the first calls
    threads: int = 1  # CPU only: torch's intra-op threads while timing
    batch: int = 1

    def __post_init__(self) -> None:
        if self.runs < 1 or self.warmup < 0 or self.threads < 1 or self.batch < 1:
            raise ValueError(f"invalid latency settings {self}: runs, threads and batch >= 1, warmup >= 0")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "form": DEPLOYMENT}


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """torch's intra-op CPU threads set to ``n`` for the block (restored afterwards)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def median_latency(fns: Mapping[str, Callable[[torch.Tensor], object]], x: torch.Tensor, repeats: int,
                   warmup: int = 3, sync: Callable[[], None] | None = None) -> dict[str, float]:
    """Median seconds per call of every callable on ``x``, timed interleaved (load from other processes hits them
    alike) after ``warmup`` untimed calls each; ``sync`` (e.g. ``torch.cuda.synchronize``) runs before the clock
    starts and stops."""
    wait = sync or (lambda: None)
    with torch.inference_mode():
        for _ in range(warmup):
            for f in fns.values():
                f(x)
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repeats):
            for k, f in fns.items():
                wait()
                t0 = time.perf_counter()
                f(x)
                wait()
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def deployed_latency(model: nn.Module, input_shape: Sequence[int], device: str = "cpu",
                     settings: LatencySettings | None = None) -> tuple[float, str]:
    """Median milliseconds of one forward of ``model``'s deployed form at ``settings.batch`` on ``device`` (see the
    module docstring), and that form (a key of ``deploy.FORMS``: ``folded`` unless the check made it fall back).
    ``model`` is moved to ``device`` and put in eval mode."""
    s = settings or LatencySettings()
    dev = torch.device(device)
    model = model.to(dev).eval()
    x = torch.rand(s.batch, *tuple(input_shape)[-3:], generator=torch.Generator().manual_seed(0)).to(dev)
    if dev.type == "cuda":
        fn = deploy(model, x)
        sec = median_latency({"m": fn}, x, s.runs, s.warmup, lambda: torch.cuda.synchronize(dev))["m"]
    else:
        with cpu_threads(s.threads):
            fn = deploy(model, x)
            sec = median_latency({"m": fn}, x, s.runs, s.warmup)["m"]
    logger.debug("%s latency on %s: %.3f ms (%s)", type(model).__name__, dev, 1000 * sec, fn.form)
    return 1000.0 * sec, fn.form


def model_latency(model: nn.Module, input_shape: Sequence[int], device: str = "cpu",
                  settings: LatencySettings | None = None) -> float:
    """Median milliseconds of one forward of ``model``'s deployed form (``deployed_latency`` without the form)."""
    return deployed_latency(model, input_shape, device, settings)[0]
