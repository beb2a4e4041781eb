"""Work units of precompute: each returns the rows it adds (``UnitRows``) and never writes itself.

Kinds and ids (the id is the journal key; everything a unit computes derives from its id's inputs):

- ``train:<arm_id>:<run_id>``: train the arm's dense model (run folder, resumable); rows: ``arms``, ``models``,
  ``task_metrics`` (model and trivial predictors).
- ``prune:<parent_run_id>:<method>[-<variant>]:<sparsity>:<finetune>``: prune + fine-tune one level; rows:
  ``models``, ``task_metrics``; the journal row's ``model_id`` is the new run id.
- ``images:<batch_key>``: a batch of validation images; rows: ``images`` (PNG), ``superpixels`` (SLIC).
- ``targets:<dense_model_id>:<draw_key>``: the dense model's candidate targets on every image of the sample and
  the seeded stratified draw (rows: ``target_draws``); ``draw_key`` hashes the image ids, k and the seed.
- ``explain:<model_id>:<batch_key>``: one model on one image batch, at its primary layers; rows: ``predictions``,
  ``explanations``, ``faithfulness`` (every metric x ordering x variant), ``similarity`` (pruned models, against the
  dense model's maps of the same batch, read from the store: the dense model's unit of the batch must be done
  first).
- ``layer:<model_id>:<batch_key>:<layer label>``: one ablation layer of one model on one batch, on the primary
  unit's targets; rows: ``explanations``, ``faithfulness`` (most-relevant-first only, ``layer_role = 'ablation'``).

``batch_key`` = hash of the batch's image ids (content hashes) and the SLIC settings key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlx_core.data.dataset import MTLDataset
from mtlx_core.explain.superpixels import SlicSettings, compute_superpixels
from mtlx_core.explain.target_draw import sample_images
from mtlx_core.models.surgery import count_macs, count_params
from mtlx_core.precompute.presets import ArmSpec, ExplainSettings
from mtlx_core.prune.deploy import FORMS
from mtlx_core.prune.latency import LatencySettings, deployed_latency
from mtlx_core.prune.record import PruningRecord
from mtlx_core.runs import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    LoadedRun,
    load_run,
    read_json,
    run_dir,
    safe_torch_load,
)
from mtlx_core.store.codec import array_hash, encode_array, encode_png, state_hash
from mtlx_core.tasks import DepthTask, Task, build_tasks
from mtlx_core.version import code_version

logger = logging.getLogger(__name__)


def slic_key(slic: SlicSettings) -> str:
    return hashlib.sha256(json.dumps(slic.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class DenseMaps:
    """The dense model's input-resolution maps ``{(image_id, task, target_id): map}`` of one batch."""

    model_id: str
    maps: dict[tuple[str, str, int], np.ndarray]


@dataclass
class Batch:
    """A batch of validation images of one arm's dataset."""

    key: str
    indices: list[int]
    image_ids: list[str]
    images: torch.Tensor  # (B, 3, H, W) float32 in [0, 1]


def make_batches(val: MTLDataset, n_images: int, batch_images: int, slic: SlicSettings, seed: int = 0,
                 sample: str = "random") -> list[Batch]:
    """``n_images`` validation images (a seeded random sample, D26) in fixed batches (a larger N only adds
    batches)."""
    order = sample_images(len(val), n_images, seed, sample)
    n = len(order)
    if n < n_images:
        logger.warning("the validation split of %s has %d images, fewer than the %d requested", val.root, n,
                       n_images)
    batches = []
    for start in range(0, n, batch_images):
        idx = order[start:start + batch_images]
        imgs = torch.stack([val[i]["image"] for i in idx]).float()
        ids = [array_hash(img.numpy()) for img in imgs]
        key = hashlib.sha256(("|".join(ids) + "|" + slic_key(slic)).encode()).hexdigest()[:16]
        batches.append(Batch(key, idx, ids, imgs))
    return batches


def images_unit(batch: Batch, dataset: str, slic: SlicSettings) -> dict[str, list[dict[str, Any]]]:
    images, sps = [], []
    for idx, iid, img in zip(batch.indices, batch.image_ids, batch.images, strict=True):
        hwc = img.permute(1, 2, 0).numpy()
        images.append({"image_id": iid, "dataset": dataset, "split": "val", "idx": idx, "height": hwc.shape[0],
                       "width": hwc.shape[1], "image": encode_png(hwc)})
        sp = compute_superpixels(img, slic)
        sps.append({"image_id": iid, "settings_key": slic_key(slic), "settings": json.dumps(slic.to_dict()),
                    "n_segments": sp.n_segments, "labels": encode_array(sp.labels.astype(np.uint16))})
    return {"images": images, "superpixels": sps}


# --- model rows ------------------------------------------------------------------------------------------

def model_costs(model: torch.nn.Module, input_shape: tuple[int, ...], device: str,
                latency: LatencySettings | None = None) -> dict[str, Any]:
    """The measured cost columns of a model (D27): CPU latency of its deployed form, GPU latency when ``device``
    is CUDA (else None), and how they were measured (``cost_settings``; ``form`` is the deployed form used)."""
    s = latency or LatencySettings()
    cpu, form = deployed_latency(model, input_shape, "cpu", s)
    gpu = None
    info: dict[str, Any] = {**s.to_dict(), "input_shape": list(input_shape), "torch": torch.__version__,
                            "cpu": platform.processor() or platform.machine()}
    if form != "folded":  # the deployment fell back (mtlx_core.prune.deploy): say how this model was timed
        info["form"] = FORMS[form]
    if torch.device(device).type == "cuda":
        gpu, gpu_form = deployed_latency(model, input_shape, device, s)
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        if gpu_form != "folded":
            info["gpu_form"] = FORMS[gpu_form]
    return {"latency_cpu_ms": cpu, "latency_gpu_ms": gpu, "cost_settings": json.dumps(info, sort_keys=True)}


def model_rows(arm: ArmSpec, run_id: str, models_dir: Path, tasks: dict[str, Task], target_sparsity: float,
               input_shape: tuple[int, ...], device: str = "cpu", latency: LatencySettings | None = None
               ) -> dict[str, list[dict[str, Any]]]:
    """``models`` and ``task_metrics`` rows of a finished run folder, with its cost axes (D27): parameters and
    MACs at ``input_shape`` (a pruned or control run's from its ``PruningRecord``, which counts them with the same
    functions on the model it trained: unstructured models count their non-zero weights), and latency."""
    path = run_dir(run_id, models_dir)
    config, metrics = read_json(path / CONFIG_FILE), read_json(path / METRICS_FILE)
    pruning = PruningRecord.from_dict(config["pruning"]) if config.get("pruning") else None
    model = load_run(run_id, models_dir).model
    if pruning is not None:  # the typed record, stored back in its canonical form (models.config)
        config = {**config, "pruning": pruning.to_dict()}
        params, macs = pruning.params_after, pruning.macs_after
        achieved, channels = pruning.achieved_sparsity, pruning.channels_removed
        if tuple(pruning.input_shape) != tuple(input_shape):
            macs = count_macs(model, input_shape)  # the study's input size, not the training crop's
    else:
        params, macs, achieved, channels = count_params(model), count_macs(model, input_shape), 0.0, 0.0
    train = config["train"]
    row = {"model_id": run_id, "arm_id": arm.arm_id, "run_id": run_id, "arch": config["architecture"]["arch"],
           "dataset": config["dataset"], "tasks": list(config["tasks"]), "weighting": train["weighting"],
           "pruning_method": pruning.method if pruning else None, "target_sparsity": float(target_sparsity),
           "achieved_sparsity": achieved, "channel_sparsity": None if channels is None else float(channels),
           "params": params, "macs": macs, "parent_id": config.get("parent_id"),
           "checkpoint": str(path / MODEL_FILE), "checkpoint_sha256": state_hash(safe_torch_load(path / MODEL_FILE)),
           "config": json.dumps(config, sort_keys=True), "seed": int(config.get("seed", train["seed"])),
           "code_version": config.get("code_version", code_version()),
           **model_costs(model, input_shape, device, latency)}
    rows = {"models": [row], "task_metrics": metric_rows(run_id, metrics["metrics"], tasks)}
    if not pruning and "baselines" in metrics:
        rows["task_metrics"] += metric_rows(f"trivial:{config['dataset']}", metrics["baselines"], tasks)
    return rows


def metric_rows(model_id: str, metrics: dict[str, dict[str, float]], tasks: dict[str, Task]) -> list[dict]:
    """``task_metrics`` rows of one model's (or the trivial predictor's) validation metrics."""
    return [{"model_id": model_id, "task": t, "metric": m, "value": float(v),
             "higher_is_better": tasks[t].higher_is_better.get(m), "split": "val",
             "is_primary": m == tasks[t].primary_metric}
            for t, ms in metrics.items() if t in tasks for m, v in ms.items()]


def arm_row(arm: ArmSpec, position: int, dense: dict[str, Any]) -> dict[str, Any]:
    return {"arm_id": arm.arm_id, "label": arm.label, "arch": dense["arch"], "dataset": dense["dataset"],
            "tasks": dense["tasks"], "weighting": dense["weighting"], "pruning_method": arm.method,
            "dense_model_id": dense["model_id"], "position": position}


# --- explanations ----------------------------------------------------------------------------------------

def explain_tasks(run: LoadedRun, spec: Any, settings: ExplainSettings) -> dict[str, Task]:
    tasks = build_tasks(spec, run.config["tasks"])
    if "depth" in tasks and settings.depth_bins != "equal_width":
        tasks["depth"] = DepthTask(spec.depth_kind, bins=settings.depth_bins)
    return tasks


def verify_checkpoint(run: LoadedRun, expected: str | None) -> None:
    """The run folder must still hold the checkpoint the store describes."""
    if expected is None:
        return
    got = state_hash(run.model.state_dict())
    if got != expected:
        raise RuntimeError(f"checkpoint {run.path / MODEL_FILE} changed since it was stored (sha256 {got[:12]} vs "
                           f"{expected[:12]}): use another --store, or delete the store to rebuild it")
