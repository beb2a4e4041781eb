"""Run folders in ``models_store/<run_id>/``: ``model.pt``, ``config.json``, ``metrics.json``.

A run is complete when ``metrics.json`` exists (written last, atomically). While training, the folder also
holds ``train_state.pt`` (the resumable checkpoint), which is removed once the run completes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtlx_core.atomic import atomic_file

DEFAULT_MODELS_DIR = Path("models_store")
MODEL_FILE, CONFIG_FILE, METRICS_FILE, STATE_FILE = "model.pt", "config.json", "metrics.json", "train_state.pt"


class RunError(ValueError):
    """A run folder that is missing, incomplete, corrupted or does not match its config."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    with atomic_file(path) as f:
        torch.save(obj, f)


def safe_torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with a clear error for missing, truncated or foreign files."""
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise RunError(f"checkpoint {path} is corrupted or not a weights-only PyTorch file: {exc}") from exc


def run_dir(run_id: str, models_dir: str | Path = DEFAULT_MODELS_DIR) -> Path:
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise RunError(f"invalid run id {run_id!r}")
    return Path(models_dir) / run_id


def is_complete(path: Path) -> bool:
    return (path / METRICS_FILE).is_file() and (path / MODEL_FILE).is_file() and (path / CONFIG_FILE).is_file()


def list_runs(models_dir: str | Path = DEFAULT_MODELS_DIR) -> list[str]:
    root = Path(models_dir)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and is_complete(p)) if root.is_dir() else []


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"{path} is not valid JSON: {exc}") from exc


@dataclass
class LoadedRun:
    run_id: str
    path: Path
    model: nn.Module
    config: dict[str, Any]
    metrics: dict[str, Any]


def load_run(run_id: str, models_dir: str | Path = DEFAULT_MODELS_DIR, device: str = "cpu") -> LoadedRun:
    """Rebuild a run's model from its folder alone (pruned runs come back at their smaller size). A run of a
    plugin model needs its plugin loaded first (``mtlx_core.plugins.load_plugins``); the error names it."""
    from mtlx_core.models import build_model
    from mtlx_core.models.surgery import resize_to_state_dict

    path = run_dir(run_id, models_dir)
    if not path.is_dir():
        available = list_runs(models_dir)
        hint = f"; available runs: {', '.join(available)}" if available else f"; {models_dir} holds no complete run"
        raise RunError(f"run {run_id!r} does not exist in {models_dir}{hint}")
    if not is_complete(path):
        raise RunError(f"run {run_id!r} is incomplete (interrupted?): re-run the command that created it to resume")
    config = read_json(path / CONFIG_FILE)
    metrics = read_json(path / METRICS_FILE)
    arch = config.get("architecture")
    if not isinstance(arch, dict) or "arch" not in arch:
        raise RunError(f"{path / CONFIG_FILE} has no 'architecture' entry")
    state = safe_torch_load(path / MODEL_FILE)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunError(f"{path / MODEL_FILE} is not a state dict of tensors")
    try:
        model = build_model(**arch)
    except ValueError as exc:  # e.g. a plugin model whose plugin is not loaded
        raise RunError(f"run {run_id!r}: cannot rebuild its model: {exc}") from exc
    try:
        if (config.get("pruning") or {}).get("structured"):
            model = resize_to_state_dict(model, state)  # channels were physically removed
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise RunError(f"{path / MODEL_FILE} does not match the architecture in {CONFIG_FILE}: {exc}") from exc
    model.to(device).eval()
    return LoadedRun(run_id, path, model, config, metrics)
