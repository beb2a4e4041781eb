"""On-demand explanations for the app: models of the store on uploaded images, IROF steps, map similarity.

Public API::

    lm = load_store_model(record, store_path)      # record: query.model_record(...); -> LiveModel
    x = to_input(img.array, working_size(img.height, img.width, lm.spec))
    res = explain_image(lm, x, "segmentation")      # -> LiveResult: .prediction, .maps {target_id: Explanation}
    sp = compute_superpixels(x[0])                  # mtlx_core.explain.superpixels
    curves = irof_target(lm, x, res.maps[tid], sp)  # {"gradcam": IrofResult, "random": ..., "reversed": ...}

    order = removal_order(saliency, labels, "gradcam" | "reversed" | "random", seed)
    step_image(image_hwc, labels, order, k, fill_mode)   # the image after k removals, as IROF built it

Everything here is the library's own Grad-CAM (``explain.gradcam.explain``), superpixels and IROF engine
(``explain.irof.irof``, ``explain.perturbation``); this module only chooses inputs and shapes outputs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtlx_core.data.layout import DatasetSpec, get_dataset_spec
from mtlx_core.explain.fastforward import FastForward, ForwardSettings
from mtlx_core.explain.gradcam import Explanation, explain
from mtlx_core.explain.irof import IrofResult, IrofSettings, irof
from mtlx_core.explain.perturbation import CurveTables, perturbed_images, quantus_fills, random_saliency, segment_order
from mtlx_core.explain.superpixels import SlicSettings, Superpixels
from mtlx_core.runs import RunError, is_complete, load_run, run_dir
from mtlx_core.store.codec import state_hash
from mtlx_core.tasks import DepthTask, build_tasks
from mtlx_core.tasks.base import Task

logger = logging.getLogger(__name__)

#: IROF orderings as the store names them: the explanation's own and the two sanity baselines (D21)
ORDERINGS: dict[str, str] = {"gradcam": "saliency", "random": "random", "reversed": "reversed"}
SIZE_MULTIPLE = 32  # SegNet-MTAN pools five times; DeepLab is fine with any multiple of 8


@dataclass(frozen=True, eq=False)
class LiveModel:
    """A model of the store, loaded from its run folder."""

    model_id: str
    run_id: str
    model: nn.Module
    tasks: dict[str, Task]
    spec: DatasetSpec
    layer: str  # default Grad-CAM layer (label or module path)
    checkpoint_matches: bool | None  # None: the store has no hash to compare with
    task_layers: dict[str, str] = field(default_factory=dict)  # the store's primary layer per task, where it has one
    #: Grad-CAM hooks the model, so one model serves one request at a time (the app shares it across sessions)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: IROF's per-task traced forwards, built once per input size and reused
    forward: FastForward | None = None

    def fast_forward(self, settings: IrofSettings) -> FastForward:
        if self.forward is None or self.forward.settings != settings.forward:
            object.__setattr__(self, "forward", FastForward(self.model, settings.forward))
        assert self.forward is not None
        return self.forward


def _models_dirs(store_path: Path, checkpoint: str | None) -> list[Path]:
    dirs = [Path(d) for d in [os.environ.get("MTLX_MODELS_DIR")] if d]
    if checkpoint:
        ck = Path(checkpoint)
        for base in ([ck] if ck.is_absolute() else [store_path.parent / ck, Path.cwd() / ck]):
            dirs.append(base.parent.parent if base.suffix == ".pt" else base.parent)
    dirs.append(store_path.parent)
    return list(dict.fromkeys(dirs))


def store_settings(settings: Mapping[str, Any]) -> tuple[SlicSettings, IrofSettings]:
    """SLIC and IROF settings matching a store's recorded explanation settings (``query.explain_settings``),
    so that live numbers are computed the way the stored ones were; defaults (D16-D18) where not recorded."""
    slic = {k: v for k, v in (settings.get("slic") or {}).items() if k != "skimage_version"}
    keys = ("trim_tasks", "batch1_numerics", "fold_bn", "channels_last")
    forward = ForwardSettings(**{k: bool(settings[k]) for k in keys if k in settings})
    irof_settings = IrofSettings(fill_mode=(settings.get("fill_modes") or ["quantus"])[0],
                                 baselines=tuple(settings.get("baselines") or ("random", "reversed")),
                                 seed=int(settings.get("seed", 0)), forward=forward)
    return SlicSettings(**slic), irof_settings


def store_layer(settings: Mapping[str, Any], arch: str, task: str, arm_id: str | None = None) -> str | None:
    """The primary Grad-CAM layer (label) a store used for a task of a model (``ExplainSettings.primary_layer``
    on the store's recorded settings); None: the model's default (D11)."""
    from mtlx_core.precompute.presets import resolve_primary_layer

    return resolve_primary_layer(settings.get("primary_layers"), settings.get("layer"), arch, task, arm_id)


def load_store_model(record: Mapping[str, Any], store_path: str | Path, depth_bins: str = "equal_width",
                     settings: Mapping[str, Any] | None = None) -> LiveModel:
    """Load a model row of the store from its run folder (``MTLX_MODELS_DIR``, its recorded checkpoint's
    folder, or the store's folder); ``RunError`` names the folders searched. ``depth_bins`` as the store's (D13);
    ``settings``: the store's explanation settings (``query.explain_settings``), whose primary Grad-CAM layers
    (``store_layer``) live explanations use; without them the model's default layer (D11)."""
    run_id = str(record["run_id"])
    dirs = _models_dirs(Path(store_path), record.get("checkpoint"))
    found = next((d for d in dirs if is_complete(run_dir(run_id, d))), None)
    if found is None:
        raise RunError(f"the checkpoint of model {record['model_id']} (run {run_id}) is not in "
                       f"{', '.join(map(str, dirs))}; set MTLX_MODELS_DIR to the folder that holds its run")
    run = load_run(run_id, found)
    sha = record.get("checkpoint_sha256")
    matches = None if not sha else state_hash(run.model.state_dict()) == sha
    if matches is False:
        logger.warning("run %s in %s is not the checkpoint the store was computed from", run_id, found)
    spec = get_dataset_spec(str(run.config.get("dataset") or record["dataset"]))
    tasks = build_tasks(spec, list(run.config.get("tasks") or record["tasks"]))
    if "depth" in tasks and depth_bins != "equal_width":
        tasks["depth"] = DepthTask(spec.depth_kind, bins=depth_bins)
    arch = str(record.get("arch") or getattr(run.model, "arch_name", ""))
    task_layers = {t: lay for t in tasks if (lay := store_layer(settings or {}, arch, t, record.get("arm_id")))}
    return LiveModel(str(record["model_id"]), run_id, run.model, tasks, spec,
                     getattr(run.model, "default_gradcam_layer", ""), matches, task_layers)


def working_size(height: int, width: int, spec: DatasetSpec, scale: str = "model") -> tuple[int, int]:
    """Input size for an image: ``model`` keeps its aspect at about the training resolution's pixel count,
    ``original`` keeps its size; both rounded to multiples of 32."""
    if scale not in ("model", "original"):
        raise ValueError(f"unknown scale {scale!r}; valid scales: model, original")
    f = (spec.height * spec.width / (height * width)) ** 0.5 if scale == "model" else 1.0
    return tuple(max(SIZE_MULTIPLE, round(s * f / SIZE_MULTIPLE) * SIZE_MULTIPLE) for s in (height, width))


def to_input(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """``(1, 3, H, W)`` float32 batch of an ``H x W x 3`` image in [0, 1], resized (antialiased bilinear)."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    return x.contiguous()


@dataclass(frozen=True, eq=False)
class LiveResult:
    """Grad-CAM of every target of one task on one image, and the model's clean prediction."""

    task: str
    prediction: np.ndarray  # display form: labels (H, W), depth (H, W) or normals (H, W, 3)
    maps: dict[int, Explanation]


def display_prediction(task: str, pred: torch.Tensor) -> np.ndarray:
    """A task output ``(C, H, W)`` as an array to show: class labels, depth, or normals in [0, 1] RGB."""
    p = pred.detach().cpu()
    if task == "segmentation":
        return p.argmax(0).numpy()
    if task == "depth":
        return p[0].numpy()
    return ((p.permute(1, 2, 0) + 1.0) / 2.0).clamp(0, 1).numpy()


def explain_image(lm: LiveModel, x: torch.Tensor, task: str, layer: str | None = None) -> LiveResult:
    """Every target's Grad-CAM (one forward, one batched backward) and the prediction of that same forward."""
    if task not in lm.tasks:
        raise ValueError(f"model {lm.model_id} has no task {task!r}; its tasks: {', '.join(lm.tasks)}")
    outputs: list[dict[str, torch.Tensor]] = []
    with lm.lock:
        handle = lm.model.register_forward_hook(lambda _m, _i, out: outputs.append(out))
        try:
            exps = explain(lm.model, x, lm.tasks[task], layer or lm.task_layers.get(task) or lm.layer or None)
        finally:
            handle.remove()
    return LiveResult(task, display_prediction(task, outputs[0][task][0]), {e.target_id: e for e in exps})


def irof_target(lm: LiveModel, x: torch.Tensor, explanation: Explanation, superpixels: Superpixels,
                settings: IrofSettings | None = None) -> dict[str, IrofResult]:
    """IROF of one explanation and its random / reversed baselines, keyed like the store's saliency methods."""
    settings = settings or IrofSettings()
    with lm.lock:
        results = irof(lm.model, x, [explanation], [superpixels], lm.tasks, settings, lm.fast_forward(settings))
    names = {v: k for k, v in ORDERINGS.items()}
    return {names[r.ordering]: r for r in results}


# --- IROF steps of stored curves ----------------------------------------------------------------------------


def removal_order(saliency: np.ndarray, labels: np.ndarray, method: str = "gradcam", seed: int = 0) -> np.ndarray:
    """Segments in the order IROF removes them for ``method`` (``gradcam``, ``reversed`` or ``random``)."""
    if method not in ORDERINGS:
        raise ValueError(f"unknown ordering {method!r}; valid orderings: {', '.join(ORDERINGS)}")
    n = int(labels.max()) + 1
    source = random_saliency(seed, labels.shape) if method == "random" else saliency
    order = segment_order(source, labels, n)
    return order[::-1].copy() if method == "reversed" else order


def removal_ranks(order: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(H, W)`` map of the step (1-based) at which each pixel's segment is removed."""
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    return rank[labels]


def step_image(image: np.ndarray, labels: np.ndarray, order: np.ndarray, k: int,
               fill_mode: str = "quantus") -> np.ndarray:
    """The ``H x W x 3`` image (float in [0, 1]) after the first ``k`` segments of ``order`` are removed."""
    chw = np.ascontiguousarray(np.moveaxis(np.asarray(image, dtype=np.float32), -1, 0))
    fills = quantus_fills(chw, labels, order) if fill_mode == "quantus" else None
    tables = CurveTables.build([order], [fills], [0])
    out = perturbed_images(torch.from_numpy(chw)[None], torch.from_numpy(labels)[None], tables,
                           torch.tensor([0]), torch.tensor([int(k)]), fill_mode)
    return out[0].permute(1, 2, 0).numpy()
