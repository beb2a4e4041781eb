"""Checked checkpoints as run folders (``mtlx_core.runs``), so precompute's units read them like trained runs.

An imported run's folder holds ``model.pt`` (the loaded model's state dict: ``torch.nn.utils.prune`` masks folded,
structurally pruned layers at their stored shapes), ``metrics.json`` (the task metrics on the data's validation
split, ``mtlx_core.train.evaluate``; the dense run also the trivial predictors' when the data has a train split)
and ``config.json``:

- ``architecture``: the model's ``arch_config`` (plugin name, task channels, model arguments; ``load_run`` rebuilds
  it once the plugin is loaded), ``dataset``, ``data_root``, ``tasks``, ``seed`` (0), ``role`` (``dense`` /
  ``pruned``), ``parent_id`` (a pruned run's dense run), ``code_version``;
- ``imported``: the source checkpoint (path, sha256, format), the registered model's name and source, its
  arguments;
- ``sparsity``: ``level`` (what the verdict calls the model's sparsity: channels removed for a structurally
  pruned checkpoint, else zero weights), ``measure``, ``weight``, ``channel``;
- ``pruning`` (pruned runs): ``structured`` (``load_run`` resizes the layers), method ``external``, variant = the
  checkpoint's format, target = achieved sparsity = the level, parameters (non-zero for unstructured) and MACs
  before and after at the data's image size, the share of channels removed.

Run ids derive from the model name, the checkpoint's file name and a hash of the checkpoint's sha256, the model
arguments, tasks, dataset, the data's manifest hash (``mtlx_core.data.manifest.dataset_manifest``: the split files'
relative paths and sizes, not where the folder is mounted, as for trained runs) and (pruned runs) the dense run:
the same command resumes, also with the data mounted elsewhere, and an existing folder is reused only when its
recorded sha256 matches. (Audits before this rule hashed the data folder's path; their run folders are imported
again under the new ids.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtlx_core.audit.checks import AuditInputs, CheckedModel
from mtlx_core.audit.request import AuditRequest
from mtlx_core.data.dataset import DatasetError, MTLDataset
from mtlx_core.data.manifest import dataset_manifest
from mtlx_core.models.surgery import count_macs, count_params
from mtlx_core.runs import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RunError,
    atomic_torch_save,
    atomic_write_json,
    is_complete,
    read_json,
    run_dir,
)
from mtlx_core.train.evaluate import evaluate, evaluate_trivial, fit_trivial_predictors
from mtlx_core.version import code_version

logger = logging.getLogger(__name__)


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")[:limit] or "model"


def imported_run_id(req: AuditRequest, checked: CheckedModel, dense_id: str | None) -> str:
    """``<model>-<checkpoint file stem>-<hash>`` (see the module docstring)."""
    key = {"model": req.model, "model_kwargs": req.model_kwargs, "tasks": list(req.tasks), "dataset": req.dataset,
           "data": dataset_manifest(req.data, req.dataset), "sha256": checked.info.sha256, "parent": dense_id}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{_slug(req.model)}-{_slug(checked.path.stem)}-{digest}"


def zero_weights(model: nn.Module) -> int:
    """Exactly-zero entries of the Conv2d / Linear weights (unstructured pruning's removed weights)."""
    return sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear))


def import_runs(req: AuditRequest, inputs: AuditInputs, device: str = "cpu") -> tuple[str, list[str]]:
    """Run folders of the dense and every pruned checkpoint (reused when complete); ``(dense id, pruned ids)``."""
    dense_id = imported_run_id(req, inputs.dense, None)
    dense_params, dense_macs = count_params(inputs.dense.model), count_macs(inputs.dense.model, inputs.input_shape)
    _import(req, inputs, inputs.dense, dense_id, None, dense_params, dense_macs, device)
    pruned_ids = []
    for p in inputs.pruned:
        run_id = imported_run_id(req, p, dense_id)
        _import(req, inputs, p, run_id, dense_id, dense_params, dense_macs, device)
        pruned_ids.append(run_id)
    return dense_id, pruned_ids


def _import(req: AuditRequest, inputs: AuditInputs, checked: CheckedModel, run_id: str, parent_id: str | None,
            dense_params: int, dense_macs: int, device: str) -> None:
    path = run_dir(run_id, req.runs_dir)
    if is_complete(path):
        got = (read_json(path / CONFIG_FILE).get("imported") or {}).get("sha256")
        if got != checked.info.sha256:
            raise RunError(f"{path} holds another checkpoint (sha256 {str(got)[:12]}, expected "
                           f"{checked.info.sha256[:12]}): delete it or pass another --models-dir")
        logger.info("%s: reusing run %s", checked.path, run_id)
        return
    logger.info("importing %s as run %s", checked.path, run_id)
    path.mkdir(parents=True, exist_ok=True)
    model = checked.model
    atomic_torch_save(path / MODEL_FILE, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    atomic_write_json(path / CONFIG_FILE, _config(req, inputs, checked, parent_id, dense_params, dense_macs))
    metrics: dict[str, Any] = {"metrics": evaluate(model.to(device), inputs.val, inputs.tasks, device=device)}
    model.to("cpu")
    if checked.role == "dense":
        baselines = _baselines(req.data, inputs)
        if baselines is not None:
            metrics["baselines"] = baselines
    atomic_write_json(path / METRICS_FILE, metrics)  # last: the run is complete


def _baselines(root: Path, inputs: AuditInputs) -> dict[str, dict[str, float]] | None:
    """The trivial predictors' metrics (fitted on the train split) when the data has one."""
    if not (root / "train").is_dir():
        logger.info("%s has no train split: no trivial predictors to compare the task metrics with", root)
        return None
    try:
        train = MTLDataset(root, inputs.spec, "train", tasks=list(inputs.tasks))
        return evaluate_trivial(fit_trivial_predictors(train), inputs.val, inputs.tasks)
    except DatasetError as exc:
        logger.warning("trivial predictors skipped: %s", exc)
        return None


def _config(req: AuditRequest, inputs: AuditInputs, checked: CheckedModel, parent_id: str | None,
            dense_params: int, dense_macs: int) -> dict[str, Any]:
    info, model = checked.info, checked.model
    config: dict[str, Any] = {
        "architecture": model.arch_config, "dataset": inputs.spec.name, "data_root": str(req.data),
        "tasks": list(inputs.tasks), "seed": 0, "role": checked.role, "parent_id": parent_id,
        "code_version": code_version(),
        "imported": {"path": str(checked.path.resolve()), "sha256": info.sha256, "format": info.format,
                     "model": req.model, "model_source": inputs.entry.source, "model_kwargs": req.model_kwargs,
                     "params_in_checkpoint": info.params},
        "sparsity": {"level": checked.level, "measure": checked.measure, "weight": float(info.weight_sparsity),
                     "channel": float(info.channel_sparsity)}}
    if checked.role == "pruned":
        params = count_params(model) - zero_weights(model)
        with torch.no_grad():
            macs = count_macs(model, inputs.input_shape)
        config["pruning"] = {
            "method": "external", "variant": info.format, "structured": checked.structured,
            "target_sparsity": checked.level, "achieved_sparsity": checked.level,
            "params_before": dense_params, "params_after": params, "macs_before": dense_macs, "macs_after": macs,
            "input_shape": list(inputs.input_shape), "channels_removed": float(info.channel_sparsity),
            "root_parent_id": parent_id, "weight_sparsity": float(info.weight_sparsity)}
    return config
