"""Latency of deployed models (D27): median of interleaved timed calls after warm-up, one CPU thread."""

from __future__ import annotations

import math

import pytest
import torch

from mtlx_core.models import build_model
from mtlx_core.prune import latency
from mtlx_core.prune.latency import LatencySettings, median_latency, model_latency


def test_median_latency_is_the_median_of_the_timed_calls_after_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"a": 0, "b": 0}
    syncs = []
    # every timed call reads the clock twice: durations of a are 1, 5, 2; of b 10, 30, 20
    ticks = iter([0, 1, 0, 10, 0, 5, 0, 30, 0, 2, 0, 20])
    monkeypatch.setattr(latency.time, "perf_counter", lambda: next(ticks))

    def make(k: str):
        def f(x: torch.Tensor) -> None:
            calls[k] += 1
        return f

    out = median_latency({"a": make("a"), "b": make("b")}, torch.zeros(1), repeats=3, warmup=2,
                         sync=lambda: syncs.append(1))
    assert out == {"a": 2, "b": 20}
    assert calls == {"a": 5, "b": 5}  # 2 warm-up + 3 timed each
    assert len(syncs) == 2 * 6  # before and after every timed call


def test_model_latency_times_the_deployed_model_on_one_thread_and_restores_threads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model("segnet_mtan", {"segmentation": 4, "depth": 1}, width=0.0625)
    threads = torch.get_num_threads()
    seen = []
    real = latency.deploy

    def spy(m: torch.nn.Module, x: torch.Tensor):
        seen.append((torch.get_num_threads(), tuple(x.shape)))
        return real(m, x)

    monkeypatch.setattr(latency, "deploy", spy)
    ms = model_latency(model, (3, 32, 64), "cpu", LatencySettings(runs=3, warmup=1))
    assert math.isfinite(ms)
    assert ms > 0
    assert seen == [(1, (1, 3, 32, 64))]
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("kw", [{"runs": 0}, {"warmup": -1}, {"threads": 0}, {"batch": 0}])
def test_invalid_latency_settings_are_refused(kw: dict) -> None:
    with pytest.raises(ValueError, match="invalid latency settings"):
        LatencySettings(**kw)
