"""Everything an audit checks before it writes anything: plugins, model, data, every checkpoint, outputs, layer.

``check_inputs(request)`` loads the registered model's every checkpoint (``models.external``), forwards one
validation image through each, checks that the outputs are exactly the requested tasks at the task's channels
and the input's size, that the explanation layer resolves, that each model rebuilds from the state dict the audit
will save (as ``runs.load_run`` will rebuild it), and that each pruned checkpoint is pruned (measured weight or
channel sparsity above 0). Any failure is an :class:`AuditInputError` naming the offending input; nothing is
written by this module.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mtlx_core.audit.request import AuditInputError, AuditRequest
from mtlx_core.data.dataset import DatasetError, MTLDataset
from mtlx_core.data.layout import DatasetSpec, get_dataset_spec
from mtlx_core.models import build_model, task_channels
from mtlx_core.models.base import MultiTaskModel
from mtlx_core.models.external import ExternalInfo, load_external_checkpoint
from mtlx_core.models.surgery import resize_to_state_dict
from mtlx_core.plugins import ModelEntry, get_model_entry, load_plugins
from mtlx_core.precompute.explainer import layer_plan
from mtlx_core.precompute.faith_rows import metric_sets
from mtlx_core.runs import RunError
from mtlx_core.tasks import Task, build_tasks

logger = logging.getLogger(__name__)

#: modules listed when the explanation layer does not resolve
MAX_CANDIDATES = 40


@dataclass(frozen=True, eq=False)
class CheckedModel:
    """One loaded checkpoint: its model, what ``load_external_checkpoint`` measured, and the audit's level."""

    role: str  # "dense" or "pruned"
    path: Path
    model: MultiTaskModel
    info: ExternalInfo
    structured: bool  # tensor shapes differ from the dense model's (channels physically removed)
    level: float  # the measured sparsity the verdict uses: channels (structured) or weights; 0 for the dense model
    measure: str  # "channels", "weights" or "none" (dense)


@dataclass(frozen=True, eq=False)
class AuditInputs:
    entry: ModelEntry
    spec: DatasetSpec
    tasks: dict[str, Task]
    val: MTLDataset
    input_shape: tuple[int, int, int]
    dense: CheckedModel
    pruned: tuple[CheckedModel, ...]


def check_inputs(req: AuditRequest) -> AuditInputs:
    """Load and check everything (see the module docstring); raises :class:`AuditInputError`."""
    try:
        loaded = load_plugins(list(req.plugins))
        entry = get_model_entry(req.model)
        spec = get_dataset_spec(req.dataset)
        tasks = build_tasks(spec, list(req.tasks))
        metric_sets(req.settings())  # metric names and options
    except (ImportError, ValueError) as exc:
        raise AuditInputError(str(exc)) from exc
    logger.info("plugins loaded: %s; model %s from %s", ", ".join(loaded) or "none", entry.name, entry.source or "?")
    val = _check_data(req.data, spec, tasks, entry.input_multiple)
    x = val[0]["image"][None].float()
    input_shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
    channels = task_channels(tasks)
    dense = _load(req, "--dense", req.dense, channels, x, tasks, None)
    pruned = tuple(_load(req, "--pruned", p, channels, x, tasks, dense) for p in req.pruned)
    seen: dict[str, Path] = {dense.info.sha256: dense.path}
    for p in pruned:
        if p.info.sha256 in seen:
            raise AuditInputError(f"--pruned {p.path} holds the same weights as {seen[p.info.sha256]}")
        seen[p.info.sha256] = p.path
    return AuditInputs(entry, spec, tasks, val, input_shape, dense, pruned)


def _check_data(root: Path, spec: DatasetSpec, tasks: Mapping[str, Task], multiple: int) -> MTLDataset:
    if not root.is_dir():
        raise AuditInputError(f"--data {root}: the data folder does not exist (a folder in the project's format, "
                              "e.g. `python -m mtlx_core.data synth --out data/synth`)")
    try:
        val = MTLDataset(root, spec, "val", tasks=list(tasks))
        sample = val[0]
    except (DatasetError, ValueError, IndexError) as exc:
        raise AuditInputError(f"--data {root}: {exc}") from exc
    h, w = sample["image"].shape[-2:]
    if multiple > 1 and (h % multiple or w % multiple):
        raise AuditInputError(f"--data {root}: images are {h}x{w}, but the model needs height and width divisible "
                              f"by {multiple} (its input_multiple)")
    return val


def _load(req: AuditRequest, flag: str, path: Path, channels: dict[str, int], x: torch.Tensor,
          tasks: Mapping[str, Task], dense: CheckedModel | None) -> CheckedModel:
    what = f"{flag} {path}"
    try:
        model, info = load_external_checkpoint(req.model, channels, path, dict(req.model_kwargs))
    except (RunError, ValueError, RuntimeError, KeyError, OSError) as exc:
        raise AuditInputError(f"{what}: {exc}") from exc
    model.eval()
    check_outputs(model, x, tasks, what)
    check_layer(model, tasks, req, what)
    if dense is None:
        if info.channel_sparsity > 0:
            raise AuditInputError(f"{what}: the dense checkpoint has {100 * info.channel_sparsity:.1f} % fewer "
                                  f"channels than model {req.model!r} builds with {req.model_kwargs or 'no arguments'}"
                                  ": give the model arguments (--model-arg KEY=VALUE) that build the dense model")
        _check_rebuild(model, False, what)
        return CheckedModel("dense", path, model, info, False, 0.0, "none")
    ref = {k: tuple(v.shape) for k, v in dense.model.state_dict().items()}
    structured = any(ref.get(k) != tuple(v.shape) for k, v in model.state_dict().items())
    _check_rebuild(model, structured, what)
    level, measure = ((float(info.channel_sparsity), "channels") if structured
                      else (float(info.weight_sparsity), "weights"))
    if not level > 0.0:
        raise AuditInputError(f"{what}: measured {measure} sparsity is 0 (weights: {info.weight_sparsity:.4f}, "
                              f"channels removed: {info.channel_sparsity:.4f}): this checkpoint is not pruned")
    return CheckedModel("pruned", path, model, info, structured, level, measure)


def check_outputs(model: nn.Module, x: torch.Tensor, tasks: Mapping[str, Task], what: str) -> None:
    """The model's forward on ``x`` returns exactly ``tasks``, each ``(1, task channels, H, W)``."""
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # any failure of the user's forward is bad input here
        raise AuditInputError(f"{what}: the forward pass fails on a {tuple(x.shape)} image: {exc}") from exc
    if not isinstance(out, Mapping):
        raise AuditInputError(f"{what}: the forward returns {type(out).__name__}, not a dict task -> tensor")
    missing = [t for t in tasks if t not in out]
    extra = [str(k) for k in out if k not in tasks]
    if missing or extra:
        raise AuditInputError(f"{what}: the model's outputs {sorted(map(str, out))} do not match the tasks "
                              f"{list(tasks)}: missing {missing or 'none'}, unexpected {extra or 'none'}")
    for name, task in tasks.items():
        y = out[name]
        want = (x.shape[0], task.out_channels, x.shape[2], x.shape[3])
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != want:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise AuditInputError(f"{what}: output {name!r} is {got}, expected {want} (batch, the task's "
                                  "channels, the input's height and width)")


def check_layer(model: nn.Module, tasks: Mapping[str, Task], req: AuditRequest, what: str) -> None:
    """The explanation layer (the registration's, or the settings') resolves on the model for every task."""
    try:
        layer_plan(model, tasks, req.settings())
    except (ValueError, AttributeError) as exc:
        names = [n for n, m in model.named_modules() if n and isinstance(m, nn.Conv2d | nn.Sequential)]
        more = f", ... ({len(names) - MAX_CANDIDATES} more)" if len(names) > MAX_CANDIDATES else ""
        raise AuditInputError(f"{what}: the explanation layer does not resolve: {exc}; candidate modules: "
                              f"{', '.join(names[:MAX_CANDIDATES])}{more}") from exc


def _check_rebuild(model: MultiTaskModel, structured: bool, what: str) -> None:
    """The state dict the audit saves rebuilds the model as ``runs.load_run`` will (its architecture config,
    resized when channels were removed)."""
    state = model.state_dict()
    try:
        again = build_model(**model.arch_config)
        if structured:
            again = resize_to_state_dict(again, state)
        again.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise AuditInputError(f"{what}: the loaded model does not rebuild from its own state dict and "
                              f"architecture config {model.arch_config}: {exc}") from exc
