"""The smoke preset's command line shared by the precompute tests (the reference run, kills, executors)."""

from __future__ import annotations

from pathlib import Path


def smoke_args(store: Path, models: Path, data: Path) -> list[str]:
    return ["--preset", "smoke", "--store", str(store), "--models-dir", str(models), "--data", str(data),
            "--threads", "1", "--no-progress", "--publish-every", "1"]
