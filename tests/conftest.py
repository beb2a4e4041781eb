"""Fixtures shared by several test modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from _smoke import smoke_args


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: tiny models run faster on it, and much faster on a shared, loaded machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def plugin_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a test registers with ``mtlx_core.plugins`` is forgotten afterwards (entry points scanned once, before)."""
    from mtlx_core import plugins

    plugins.model_names()
    for attr in ("_MODELS", "_TASKS", "_LOADED"):
        monkeypatch.setattr(plugins, attr, dict(getattr(plugins, attr)))


@pytest.fixture(scope="session")
def smoke_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One uninterrupted smoke run (in-process, 1 thread, the local executor): the reference store of the precompute
    tests (``test_precompute``, ``test_precompute_ray``)."""
    from mtlx_core.precompute.__main__ import main

    root = tmp_path_factory.mktemp("precompute")
    paths = {"root": root, "data": root / "synth_smoke", "store": root / "ref" / "study.duckdb",
             "models": root / "ref" / "models"}
    threads = torch.get_num_threads()
    try:
        assert main(smoke_args(paths["store"], paths["models"], paths["data"])) == 0
    finally:
        torch.set_num_threads(threads)
    return paths
