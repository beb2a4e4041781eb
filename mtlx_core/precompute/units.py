"""Work units of precompute: each returns the rows it adds (``UnitRows``) and never writes itself.

Kinds and ids (the id is the journal key; everything a unit computes derives from its id's inputs):

- ``train:<arm_id>:<run_id>``: train the arm's dense model (run folder, resumable); rows: ``arms``, ``models``,
  ``task_metrics`` (model and trivial predictors).
- ``prune:<parent_run_id>:<method>[-<variant>]:<sparsity>:<finetune>``: prune + fine-tune one level; rows:
  ``models``, ``task_metrics``; the journal row's ``model_id`` is the new run id.
- ``images:<batch_key>``: a batch of validation images; rows: ``images`` (PNG), ``superpixels`` (SLIC).
- ``explain:<model_id>:<batch_key>``: one model on one image batch; rows: ``predictions``, ``explanations``,
  ``irof`` (Grad-CAM + baselines x fill modes), ``similarity`` (pruned models, against the dense model's maps
  of the same batch, read from the store: the dense model's unit of the batch must be done first).

``batch_key`` = hash of the batch's image ids (content hashes) and the SLIC settings key.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlx_core.data.dataset import MTLDataset
from mtlx_core.explain.fastforward import FastForward, ForwardSettings
from mtlx_core.explain.gradcam import Explanation, explain, resolve_layer
from mtlx_core.explain.irof import IrofResult, IrofSettings, irof
from mtlx_core.explain.superpixels import SlicSettings, Superpixels, compute_superpixels
from mtlx_core.models.surgery import count_macs, count_params
from mtlx_core.precompute.presets import ArmSpec, ExplainSettings
from mtlx_core.precompute.shared_random import SharedRandom
from mtlx_core.precompute.similarity import map_similarity
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
from mtlx_core.tasks.base import ExplanationTarget
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


def make_batches(val: MTLDataset, n_images: int, batch_images: int, slic: SlicSettings) -> list[Batch]:
    """The first ``n_images`` validation images in fixed batches (a larger N only adds batches)."""
    n = min(n_images, len(val))
    if n < n_images:
        logger.warning("the validation split of %s has %d images, fewer than the %d requested", val.root, n,
                       n_images)
    batches = []
    for start in range(0, n, batch_images):
        idx = list(range(start, min(n, start + batch_images)))
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

def model_rows(arm: ArmSpec, run_id: str, models_dir: Path, tasks: dict[str, Task], target_sparsity: float,
               input_shape: tuple[int, ...]) -> dict[str, list[dict[str, Any]]]:
    """``models`` and ``task_metrics`` rows of a finished run folder."""
    path = run_dir(run_id, models_dir)
    config, metrics = read_json(path / CONFIG_FILE), read_json(path / METRICS_FILE)
    pruning = config.get("pruning") or {}
    if pruning:
        params, macs = int(pruning["params_after"]), int(pruning["macs_after"])
        achieved, channels = float(pruning["achieved_sparsity"]), pruning.get("channels_removed")
    else:
        model = load_run(run_id, models_dir).model
        params, macs, achieved, channels = count_params(model), count_macs(model, input_shape), 0.0, 0.0
    train = config["train"]
    row = {"model_id": run_id, "arm_id": arm.arm_id, "run_id": run_id, "arch": config["architecture"]["arch"],
           "dataset": config["dataset"], "tasks": list(config["tasks"]), "weighting": train["weighting"],
           "pruning_method": pruning.get("method"), "target_sparsity": float(target_sparsity),
           "achieved_sparsity": achieved, "channel_sparsity": None if channels is None else float(channels),
           "params": params, "macs": macs, "parent_id": config.get("parent_id"),
           "checkpoint": str(path / MODEL_FILE), "checkpoint_sha256": state_hash(safe_torch_load(path / MODEL_FILE)),
           "config": json.dumps(config, sort_keys=True), "seed": int(config.get("seed", train["seed"])),
           "code_version": config.get("code_version", code_version())}
    rows = {"models": [row], "task_metrics": _metric_rows(run_id, metrics["metrics"], tasks)}
    if not pruning and "baselines" in metrics:
        rows["task_metrics"] += _metric_rows(f"trivial:{config['dataset']}", metrics["baselines"], tasks)
    return rows


def _metric_rows(model_id: str, metrics: dict[str, dict[str, float]], tasks: dict[str, Task]) -> list[dict]:
    return [{"model_id": model_id, "task": t, "metric": m, "value": float(v),
             "higher_is_better": tasks[t].higher_is_better.get(m), "split": "val"}
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


class ModelExplainer:
    """A loaded model with its IROF fast forwards (built once, reused by every batch of the model)."""

    def __init__(self, run: LoadedRun, tasks: dict[str, Task], settings: ExplainSettings, device: str) -> None:
        self.run, self.tasks, self.settings = run, tasks, settings
        self.model = run.model.to(device).eval()
        self.device = device
        self.layer = resolve_layer(self.model, settings.layer)[0]
        fwd = ForwardSettings(trim_tasks=settings.trim_tasks, batch1_numerics=settings.batch1_numerics,
                              fold_bn=settings.fold_bn, channels_last=settings.channels_last)
        self.fwd = FastForward(self.model, fwd)
        self.irof_settings = {f: IrofSettings(fill_mode=f, baselines=tuple(b for b in settings.baselines
                                                                           if b != "random"),
                                              seed=settings.seed, memory_budget_mb=settings.memory_budget_mb,
                                              forward=fwd) for f in settings.fill_modes}
        self.random = ({f: SharedRandom(self.model, tasks, IrofSettings(
            fill_mode=f, baselines=("random",), seed=settings.seed, memory_budget_mb=settings.memory_budget_mb,
            forward=fwd), forward=self.fwd) for f in settings.fill_modes} if "random" in settings.baselines else {})

    def targets(self, out: dict[str, torch.Tensor], wanted: dict[tuple[int, str], set[int]] | None
                ) -> dict[str, list[list[ExplanationTarget]]]:
        """Targets per task and image: all; the K largest (dense model); or the dense model's ids (pruned)."""
        k = self.settings.max_targets
        result: dict[str, list[list[ExplanationTarget]]] = {}
        for name, task in self.tasks.items():
            per_image = []
            for i in range(out[name].shape[0]):
                found = task.explanation_targets(out[name][i].detach().cpu())
                if wanted is not None:
                    found = [t for t in found if t.target_id in wanted.get((i, name), set())]
                elif k is not None:
                    found = sorted(sorted(found, key=lambda t: (-t.n_pixels, t.target_id))[:k],
                                   key=lambda t: t.target_id)
                per_image.append(found)
            result[name] = per_image
        return result

    def run_batch(self, model_id: str, batch: Batch, sps: list[Superpixels], slic_settings_key: str,
                  wanted: dict[tuple[int, str], set[int]] | None,
                  dense: DenseMaps | None) -> dict[str, list[dict[str, Any]]]:
        x = batch.images.to(self.device)
        with torch.inference_mode():
            out = {t: v.float() for t, v in self.model(x).items()}
        rows: dict[str, list[dict[str, Any]]] = {"predictions": _prediction_rows(model_id, batch, out)}
        targets = self.targets(out, wanted)
        exps: list[Explanation] = []
        for name, task in self.tasks.items():
            if any(targets[name]):
                exps += explain(self.model, x, task, self.layer, targets=targets[name])
        cv = code_version()
        rows["explanations"] = [{
            "model_id": model_id, "image_id": batch.image_ids[e.image_index], "task": e.task,
            "target_id": e.target_id, "target": e.target_name, "layer": e.layer, "n_pixels": e.target.n_pixels,
            "is_zero": bool(e.is_zero), "saliency": encode_array(e.map_input.astype(np.float32)),
            "saliency_layer": encode_array(e.map_layer.astype(np.float32)), "code_version": cv,
            "settings": json.dumps({**e.settings.to_dict(), "target_rule": e.target.rule,
                                    "edges": list(e.target.edges)})} for e in exps]
        rows["irof"] = []
        for fill, st in self.irof_settings.items():
            results: list[IrofResult] = irof(self.model, x, exps, sps, self.tasks, st, forward=self.fwd) if exps else []
            if fill in self.random and exps:
                results += self.random[fill](x, exps, sps)
            rows["irof"] += [_irof_row(model_id, batch, r, self.layer, slic_settings_key, cv) for r in results]
        if dense is not None:
            rows["similarity"] = _similarity_rows(model_id, batch, exps, dense, self.settings.topk, cv)
        return rows


def _prediction_rows(model_id: str, batch: Batch, out: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    rows = []
    for name, pred in out.items():
        for i, iid in enumerate(batch.image_ids):
            p = pred[i].cpu()
            arr = (p.argmax(0).numpy().astype(np.uint8) if name == "segmentation"
                   else p[0].numpy().astype(np.float16) if name == "depth" else p.numpy().astype(np.float16))
            rows.append({"model_id": model_id, "image_id": iid, "task": name, "prediction": encode_array(arr)})
    return rows


def _irof_row(model_id: str, batch: Batch, r: IrofResult, layer: str, skey: str, cv: str) -> dict[str, Any]:
    method = "gradcam" if r.ordering == "saliency" else r.ordering
    settings = {**r.settings.to_dict(), "slic": r.slic.to_dict(), "ordering": r.ordering}
    return {"model_id": model_id, "image_id": batch.image_ids[r.image_index], "task": r.task,
            "target_id": r.target_id, "target": r.target_name, "saliency_method": method,
            "fill_mode": r.settings.fill_mode, "layer": layer, "settings_key": skey, "n_segments": r.n_segments,
            "clean_score": r.clean_score, "curve": [float(v) for v in r.curve], "aoc": r.aoc,
            "aoc_norm": r.aoc_norm, "seed": r.settings.seed, "code_version": cv, "status": r.status,
            "settings": json.dumps(settings, sort_keys=True, default=str)}


def _similarity_rows(model_id: str, batch: Batch, exps: list[Explanation], dense: DenseMaps, topk: float,
                     cv: str) -> list[dict[str, Any]]:
    rows = []
    for e in exps:
        iid = batch.image_ids[e.image_index]
        ref = dense.maps.get((iid, e.task, e.target_id))
        if ref is None:
            continue
        s = map_similarity(e.map_input, ref, topk)
        rows.append({"model_id": model_id, "reference_id": dense.model_id, "image_id": iid, "task": e.task,
                     "target_id": e.target_id, "layer": e.layer, "spearman": s.spearman, "ssim": s.ssim,
                     "topk_iou": s.topk_iou, "topk": s.topk, "topk_pixels": s.topk_pixels, "code_version": cv})
    return rows


def verify_checkpoint(run: LoadedRun, expected: str | None) -> None:
    """The run folder must still hold the checkpoint the store describes."""
    if expected is None:
        return
    got = state_hash(run.model.state_dict())
    if got != expected:
        raise RuntimeError(f"checkpoint {run.path / MODEL_FILE} changed since it was stored (sha256 {got[:12]} vs "
                           f"{expected[:12]}): use another --store, or delete the store to rebuild it")
