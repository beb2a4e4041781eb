"""The perturbation chunks' memory budget (issue 22): from the device by default, an explicit int overrides it,
and neither the budget nor the GPU share enters the store's settings key."""

from __future__ import annotations

import logging

import pytest
import torch
from _explain_models import TinyMTL, single_thread, tasks_for  # noqa: F401

from mtlx_core.explain.irof import IrofSettings
from mtlx_core.faithfulness.engine import MAX_CHUNK, Engine, EngineSettings
from mtlx_core.faithfulness.memory import (
    CPU_BUDGET_MB,
    SAFETY_FRACTION,
    chunk_cap,
    device_budget_bytes,
    memory_budget,
)
from mtlx_core.precompute.presets import ExplainSettings

GIB = 2**30
FREE = 45 * GIB


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """``torch.cuda`` reporting ``FREE`` bytes free and an empty allocator cache; records each query's device."""
    calls: list[object] = []

    def mem_get_info(device: object = None) -> tuple[int, int]:
        calls.append(device)
        return FREE, 80 * GIB

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    return calls


def test_cuda_budget_is_free_memory_times_share_times_safety_fraction(fake_cuda: list[object]) -> None:
    assert SAFETY_FRACTION == 0.5
    assert device_budget_bytes("cuda:0", 0.5) == int(FREE * 0.5 * 0.5)
    assert device_budget_bytes(torch.device("cuda", 1)) == int(FREE * 0.5)
    assert fake_cuda == [torch.device("cuda", 0), torch.device("cuda", 1)]
    b = memory_budget("cuda:0", None, 0.5)
    assert b.source == "budget 11.2 GiB = free 45.0 GiB x share 0.5 x 0.5"


def test_cuda_budget_counts_the_allocator_cache_this_process_can_reuse(fake_cuda: list[object],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 5 * GIB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2 * GIB)
    assert device_budget_bytes("cuda", 1.0) == int((FREE + 3 * GIB) * SAFETY_FRACTION)


def test_cpu_budget_is_1024_mb_whatever_the_share(fake_cuda: list[object]) -> None:
    assert CPU_BUDGET_MB == 1024
    assert device_budget_bytes("cpu") == device_budget_bytes(torch.device("cpu"), 0.25) == 1024 * 2**20
    assert memory_budget("cpu", None).bytes == 1024 * 2**20
    assert fake_cuda == []  # the GPU is never queried for a CPU budget


def test_an_explicit_budget_overrides_the_device(fake_cuda: list[object]) -> None:
    assert memory_budget("cuda:0", 512, 0.25).bytes == 512 * 2**20
    assert memory_budget("cpu", 4096).bytes == 4096 * 2**20
    assert fake_cuda == []


@pytest.mark.parametrize("share", [0.0, -0.25, 1.5, float("nan")])
def test_a_gpu_share_outside_0_1_is_refused_with_the_valid_range(share: float) -> None:
    with pytest.raises(ValueError, match=r"gpu_share must be in \(0, 1\]"):
        device_budget_bytes("cuda:0", share)
    with pytest.raises(ValueError, match=r"gpu_share must be in \(0, 1\]"):
        EngineSettings(gpu_share=share)
    with pytest.raises(ValueError, match=r"gpu_share must be in \(0, 1\]"):
        ExplainSettings(gpu_share=share)
    with pytest.raises(ValueError, match=r"gpu_share must be in \(0, 1\]"):
        IrofSettings(gpu_share=share).family()


def test_budget_and_gpu_share_are_not_in_the_settings_key() -> None:
    key = ExplainSettings().key()
    assert ExplainSettings(memory_budget_mb=256).key() == key
    assert ExplainSettings(memory_budget_mb=None, gpu_share=0.25).key() == key
    assert "gpu_share" not in ExplainSettings().key_fields()
    assert "memory_budget_mb" not in ExplainSettings().key_fields()


def test_chunk_cap_is_budget_over_bytes_per_image_between_1_and_max() -> None:
    assert chunk_cap(10 * 2**20, 2**20, 32) == 10
    assert chunk_cap(10, 2**20, 32) == 1
    assert chunk_cap(GIB, 2**20, 32) == 32


def test_a_larger_budget_gives_a_larger_chunk_for_the_same_graph() -> None:
    model, x = TinyMTL(), torch.rand(1, 3, 32, 48)
    small, large = (Engine(model, tasks_for(), EngineSettings(memory_budget_mb=mb)) for mb in (1, 4))
    per = small.fwd.activation_bytes_per_image("depth", x)
    assert 1 <= 2**20 // per < MAX_CHUNK // 4  # the graph makes the budgets bind below the largest chunk
    assert small.cap("depth", x) == max(1, 2**20 // per)
    assert large.cap("depth", x) == 4 * 2**20 // per > small.cap("depth", x)


def test_the_engine_measures_the_gpu_budget_once_and_logs_each_chunk(fake_cuda: list[object],
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    model, x = TinyMTL(), torch.rand(1, 3, 32, 48)
    monkeypatch.setattr(Engine, "device", property(lambda self: torch.device("cuda", 0)))
    engine = Engine(model, tasks_for(), EngineSettings(gpu_share=0.5))
    with caplog.at_level(logging.INFO, logger="mtlx_core.faithfulness.engine"):
        caps = [engine.cap(g, x) for g in ("depth", "normals", "depth")]
    assert len(fake_cuda) == 1
    assert engine.budget().bytes == int(FREE * 0.5 * SAFETY_FRACTION)
    assert caps[0] == chunk_cap(engine.budget().bytes, engine.fwd.activation_bytes_per_image("depth", x), MAX_CHUNK)
    lines = [r.getMessage() for r in caplog.records if "chunk" in r.getMessage()]
    assert len(lines) == 2  # once per graph and image size
    assert f"chunk {caps[0]} (budget 11.2 GiB = free 45.0 GiB x share 0.5 x 0.5;" in lines[0]


def test_the_default_cpu_engine_chunks_as_the_former_1024_mb_budget() -> None:
    model, x = TinyMTL(), torch.rand(1, 3, 32, 48)
    default, fixed = Engine(model, tasks_for()), Engine(model, tasks_for(), EngineSettings(memory_budget_mb=1024))
    assert default.settings.memory_budget_mb is None
    assert default.budget().bytes == fixed.budget().bytes == 1024 * 2**20
    assert default.cap("segmentation", x) == fixed.cap("segmentation", x)
