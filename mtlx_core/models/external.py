"""Checkpoints that mtlx did not train: ``load_external_checkpoint(arch, task_channels, path)``.

Read with ``torch.load(weights_only=True)`` always; the formats (``ExternalInfo.format``):

- ``plain``: a state dict of the factory's module (keys without ``net.``; a ``{"state_dict": ...}`` or
  ``{"model": ...}`` wrapper and a ``module.`` prefix of DataParallel are accepted);
- ``structured``: the same keys with smaller conv / BN / linear tensors (a structurally pruned model): the
  layers are rebuilt to the checkpoint's shapes (``surgery.resize_to_state_dict``; grouped and depthwise convs
  included);
- ``torch_prune``: a state dict of a model pruned with ``torch.nn.utils.prune`` (``<p>_orig`` and ``<p>_mask``
  pairs, folded into ``<p> = orig * mask``);
- ``torch_pruning``: what ``torch_pruning.state_dict(model)`` writes (``{"full_state_dict", "attributions"}``:
  every module's ``__dict__``). It pickles module objects; it is read with ``weights_only=True`` by letting an
  inert placeholder stand in for each pickled class (no code of the file runs) and keeping only the tensors.

A pickled whole model (``torch.save(model)``) is refused with how to save a state dict instead. Errors name the
first missing and unexpected keys and the first shape that cannot be rebuilt; nothing is written.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtlx_core.models import build_model
from mtlx_core.models.base import MultiTaskModel
from mtlx_core.models.plugin_model import PluginModel
from mtlx_core.models.surgery import count_params, resize_to_state_dict

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("plain", "structured", "torch_prune", "torch_pruning")
SAVE_HINT = ("save the weights instead: torch.save(model.state_dict(), path) (a structurally pruned model's "
             "smaller shapes are rebuilt from its state dict)")


class ExternalCheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the registered model."""


@dataclass(frozen=True)
class ExternalInfo:
    """What was read: file, format and the measured size and sparsity of the loaded model."""

    path: str
    sha256: str
    format: str
    weight_sparsity: float  # share of zero weights in the conv and linear layers
    channel_sparsity: float  # share of conv / linear output channels removed vs the factory's model
    params: int


class _Inert:
    """Stands in for a pickled class while a checkpoint is read: keeps the pickled state, runs no code."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:
            state = state[0]
        if isinstance(state, dict):
            self.__dict__.update(state)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read(path: Path) -> tuple[Any, list[str]]:
    """The checkpoint's object, and the pickled classes that inert placeholders stood in for."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True), []
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc) and "allowlisted" not in str(exc):
            raise ExternalCheckpointError(f"{path} cannot be read with weights_only=True: {exc}") from exc
    except Exception as exc:  # truncated, not a torch file, ...
        raise ExternalCheckpointError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        with torch.serialization.safe_globals([(_Inert, n) for n in names]):
            return torch.load(path, map_location="cpu", weights_only=True), list(names)
    except Exception as exc:
        raise ExternalCheckpointError(f"{path} holds pickled Python objects that cannot be read with "
                                      f"weights_only=True ({exc}); {SAVE_HINT}") from exc


def _from_torch_pruning(obj: Any, path: Path, classes: list[str]) -> dict[str, torch.Tensor]:
    """The tensors of ``torch_pruning.state_dict``'s ``full_state_dict`` (parameters and persistent buffers)."""
    full = obj.get("full_state_dict") if isinstance(obj, Mapping) else None
    if not isinstance(full, Mapping) or "attributions" not in obj:
        ordered = sorted(classes, key=lambda c: (c.startswith("torch."), c))  # the user's classes first
        shown = ", ".join(ordered[:8]) + (", ..." if len(ordered) > 8 else "")
        raise ExternalCheckpointError(f"{path} holds a pickled model or other Python objects ({shown}), "
                                      f"not weights: mtlx reads checkpoints with weights_only=True; {SAVE_HINT}")
    out: dict[str, torch.Tensor] = {}
    for name, state in full.items():
        if not isinstance(state, Mapping):
            continue
        listed = state.get("_non_persistent_buffers_set")
        skip = set(listed) if isinstance(listed, set | frozenset | list | tuple) else set()
        for group in ("_parameters", "_buffers"):
            tensors = state.get(group)
            for k, v in (tensors.items() if isinstance(tensors, Mapping) else ()):
                if isinstance(v, torch.Tensor) and k not in skip:
                    out[f"{name}.{k}" if name else k] = v.detach()
    if not out:
        raise ExternalCheckpointError(f"{path}: the Torch-Pruning state holds no tensors")
    return out


def _state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ExternalCheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors "
                                      f"(optionally under 'state_dict' or 'model'); {SAVE_HINT}")
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise ExternalCheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor; expected a "
                                          f"state dict (optionally under 'state_dict' or 'model')")
    return {str(k): v for k, v in obj.items()}


def _strip_prefix(sd: dict[str, torch.Tensor], expected: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    for prefix in ("module.", "net."):
        if all(k.startswith(prefix) for k in sd) and not all(k.startswith(prefix) for k in expected):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def fold_pruning_masks(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """``torch.nn.utils.prune`` pairs ``<p>_orig`` / ``<p>_mask`` folded into ``<p>``; whether any were."""
    out: dict[str, torch.Tensor] = {}
    folded = False
    for k, v in sd.items():
        base = k[:-5]
        if k.endswith("_orig") and f"{base}_mask" in sd:
            mask = sd[f"{base}_mask"]
            if mask.shape != v.shape:
                raise ExternalCheckpointError(f"{base}_mask has shape {tuple(mask.shape)}, {k} {tuple(v.shape)}")
            out[base] = v * mask.to(v.dtype)
            folded = True
        elif not (k.endswith("_mask") and f"{base}_orig" in sd):
            out[k] = v
    return out, folded


def _out_channels(module: nn.Module) -> dict[str, int]:
    return {n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
            for n, m in module.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def _check_keys(sd: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor], arch: str, path: Path) -> None:
    for k, v in expected.items():  # a BN counter is not a weight: tolerate checkpoints without it
        if k not in sd and k.endswith("num_batches_tracked"):
            sd[k] = v.clone()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        parts = [f"{len(missing)} missing key(s), first {missing[0]!r}" if missing else "no missing key",
                 f"{len(unexpected)} unexpected key(s), first {unexpected[0]!r}" if unexpected else "no unexpected key"]
        raise ExternalCheckpointError(f"{path} does not fit model {arch!r}: {'; '.join(parts)} (keys are the "
                                      f"factory's module's state dict keys, without 'net.')")


def _rebuild(target: nn.Module, sd: dict[str, torch.Tensor], path: Path) -> None:
    try:
        resize_to_state_dict(target, sd)
    except ValueError as exc:
        raise ExternalCheckpointError(f"{path}: cannot rebuild the model to the checkpoint's shapes: {exc}") from exc
    for k, v in target.state_dict().items():
        if tuple(sd[k].shape) != tuple(v.shape):
            owner = type(target.get_submodule(k.rpartition(".")[0])).__name__ if "." in k else type(target).__name__
            raise ExternalCheckpointError(
                f"{path}: cannot rebuild {k!r} ({owner}) to the checkpoint's shape {tuple(sd[k].shape)} (the model "
                f"has {tuple(v.shape)}); Conv2d (grouped and depthwise included), BatchNorm2d and Linear layers "
                f"are rebuilt")


def load_external_checkpoint(arch: str, task_channels: dict[str, int], path: str | Path,
                             model_kwargs: dict[str, Any] | None = None) -> tuple[MultiTaskModel, ExternalInfo]:
    """Build registered model ``arch`` and load a checkpoint of any supported format into it (module docstring).

    Returns the model in eval mode and what was read. Raises :class:`ExternalCheckpointError` (a ValueError)."""
    path = Path(path)
    if not path.is_file():
        raise ExternalCheckpointError(f"checkpoint {path} does not exist")
    obj, classes = _read(path)
    stubbed = bool(classes)
    raw = _from_torch_pruning(obj, path, classes) if stubbed else _state_dict(obj, path)
    model = build_model(arch, task_channels, **(model_kwargs or {}))
    target: nn.Module = model.net if isinstance(model, PluginModel) else model
    expected = target.state_dict()
    sd, folded = fold_pruning_masks(_strip_prefix(raw, expected))
    _check_keys(sd, expected, arch, path)
    dense = _out_channels(target)
    structured = any(tuple(sd[k].shape) != tuple(v.shape) for k, v in expected.items())
    if structured:
        _rebuild(target, sd, path)
    try:
        target.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ExternalCheckpointError(f"{path} does not load into model {arch!r}: {exc}") from exc
    if isinstance(model, PluginModel):
        try:
            model.check_outputs()
        except ValueError as exc:
            raise ExternalCheckpointError(f"{path}: the model rebuilt to the checkpoint's shapes does not run: "
                                          f"{exc}") from exc
    model.eval()
    fmt = "torch_pruning" if stubbed else "torch_prune" if folded else "structured" if structured else "plain"
    info = ExternalInfo(str(path), _sha256(path), fmt, weight_sparsity(target), channel_sparsity(target, dense),
                        count_params(model))
    logger.info("loaded %s (%s): %d params, weight sparsity %.3f, channel sparsity %.3f", path, fmt, info.params,
                info.weight_sparsity, info.channel_sparsity)
    return model, info


def weight_sparsity(model: nn.Module) -> float:
    """Share of exactly-zero weights over every Conv2d and Linear weight."""
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    total = sum(w.numel() for w in weights)
    return float(sum(int((w == 0).sum()) for w in weights) / total) if total else 0.0


def channel_sparsity(model: nn.Module, dense: Mapping[str, int]) -> float:
    """Share of the output channels of the dense model's Conv2d / Linear layers (``dense``: name -> channels)
    that ``model`` no longer has."""
    now = _out_channels(model)
    total = sum(dense.values())
    kept = sum(min(now.get(n, 0), c) for n, c in dense.items())
    return float(1 - kept / total) if total else 0.0
