"""On-demand work for the app: models of the store on uploaded images, and the perturbed images of stored curves.

Public API::

    lm = load_store_model(record, store_path)      # record: query.model_record(...); -> LiveModel
    x = to_input(img.array, working_size(img.height, img.width, lm.spec))
    res = explain_image(lm, x, "segmentation")      # -> LiveResult: .prediction, .maps {target_id: Explanation}
    res = explain_image(lm, x, "segmentation", explainer="gradcampp")  # any of LIVE_EXPLAINERS
    sp = compute_superpixels(x[0])                  # re-exported from mtlx_core.explain.superpixels
    curves = irof_target(lm, x, res.maps[tid], sp)  # {"gradcampp": IrofResult, "random": ..., "reversed": ...}

    # any stored curve of any curve metric (settings: query.settings_of(store, metric, variant))
    images = perturbed_steps("deletion", settings, image, saliency, ordering="morf", points=[0, 2])
    step_map, steps = perturbation_steps("irof", settings, image, None, seed=3, superpixels=labels,
                                         ordering="random")

Everything here is the library's own explainers (``explain.explainers``), superpixels, IROF (``explain.irof``)
and faithfulness metrics (``faithfulness.registry``: each metric's ``plan``, drawn by
``faithfulness.engine.perturbed_image``); this module only chooses inputs and shapes outputs. It also re-exports
``compute_superpixels`` and ``RunError``, so that the pages import nothing else of ``mtlx_core``.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtlx_core.data.layout import DatasetSpec, get_dataset_spec
from mtlx_core.explain.explainers import EXPLAINERS, get_explainer
from mtlx_core.explain.fastforward import FastForward, ForwardSettings
from mtlx_core.explain.gradcam import Explanation
from mtlx_core.explain.irof import IrofResult, IrofSettings, irof
from mtlx_core.explain.superpixels import SlicSettings, Superpixels
from mtlx_core.explain.superpixels import compute_superpixels as compute_superpixels  # re-exported for the pages
from mtlx_core.faithfulness.engine import perturbed_image
from mtlx_core.faithfulness.metric import ImageContext, Metric, random_map
from mtlx_core.faithfulness.plan import CurvePlan
from mtlx_core.faithfulness.registry import METRICS
from mtlx_core.runs import RunError as RunError  # re-exported: what load_store_model raises
from mtlx_core.runs import is_complete, load_run, run_dir
from mtlx_core.store.codec import state_hash
from mtlx_core.tasks import DepthTask, build_tasks
from mtlx_core.tasks.base import Task

logger = logging.getLogger(__name__)

#: the explainers the Live page offers (every registered one, Grad-CAM first) and the slow ones among them on a CPU
LIVE_EXPLAINERS: tuple[str, ...] = tuple(EXPLAINERS)
SLOW_EXPLAINERS: tuple[str, ...] = ("scorecam", "integrated_gradients")  # K masked forwards; n_steps per target
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
    forward = ForwardSettings(**{k: bool(settings[k]) for k in keys if k in settings},
                              rounding=str(settings.get("rounding", "exact")))
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

    def snap(side: int) -> int:
        return max(SIZE_MULTIPLE, round(side * f / SIZE_MULTIPLE) * SIZE_MULTIPLE)

    return snap(height), snap(width)


def to_input(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """``(1, 3, H, W)`` float32 batch of an ``H x W x 3`` image in [0, 1], resized (antialiased bilinear)."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    return x.contiguous()


@dataclass(frozen=True, eq=False)
class LiveResult:
    """One explainer's maps of every target of one task on one image, and the model's clean prediction."""

    task: str
    prediction: np.ndarray  # the store's form (``Task.stored_prediction``): labels / depth (H, W), normals (3, H, W)
    maps: dict[int, Explanation]


def explain_image(lm: LiveModel, x: torch.Tensor, task: str, layer: str | None = None,
                  explainer: str = "gradcam") -> LiveResult:
    """Every target's map by ``explainer`` (a registered name; the gradient CAMs from one forward and one batched
    backward) at the store's layer for the task (``layer`` overrides it), and the prediction of the explainer's
    first (clean) forward, whose prediction also gives the targets (D12-D15)."""
    if task not in lm.tasks:
        raise ValueError(f"model {lm.model_id} has no task {task!r}; its tasks: {', '.join(lm.tasks)}")
    method = get_explainer(explainer)  # an unknown name raises with the valid ones

    def first_output(_m: nn.Module, _i: object, out: dict[str, torch.Tensor]) -> None:
        if not outputs:  # the clean forward; later ones (Score-CAM's masks, IG's path) are not kept
            outputs.append(out[task].detach())

    outputs: list[torch.Tensor] = []
    with lm.lock:
        handle = lm.model.register_forward_hook(first_output)
        try:
            exps = method.explain(lm.model, x, lm.tasks[task], layer or lm.task_layers.get(task) or lm.layer or None)
        finally:
            handle.remove()
    return LiveResult(task, lm.tasks[task].stored_prediction(outputs[0][0]), {e.target_id: e for e in exps})


def irof_target(lm: LiveModel, x: torch.Tensor, explanation: Explanation, superpixels: Superpixels,
                settings: IrofSettings | None = None) -> dict[str, IrofResult]:
    """IROF of one explanation and its random / reversed baselines, keyed like the store's saliency methods: the
    explanation's explainer (``gradcam``, ``gradcampp``, ...), ``random`` and ``reversed``."""
    settings = settings or IrofSettings()
    with lm.lock:
        results = irof(lm.model, x, [explanation], [superpixels], lm.tasks, settings, lm.fast_forward(settings))
    return {(explanation.saliency_method if r.ordering == "saliency" else r.ordering): r for r in results}


# --- perturbation steps of any stored curve metric ----------------------------------------------------------

#: orderings as the ``faithfulness`` table names them (D24)
CURVE_ORDERINGS: tuple[str, ...] = ("morf", "lerf", "random")


def curve_metric(metric: str, settings: Mapping[str, Any]) -> Metric:
    """The registered curve metric ``metric`` rebuilt from a variant's recorded settings
    (``query.settings_of``): the recorded ``metric`` options its constructor takes (the others, such as the
    pixels per step, are derived from them)."""
    cls = METRICS.get(metric)
    if cls is None:
        raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(METRICS)}")
    if getattr(cls, "kind", "curve") != "curve":
        raise ValueError(f"metric {metric!r} has no perturbation curve (kind {getattr(cls, 'kind', '?')!r})")
    recorded = dict(settings.get("metric") or {})
    params = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        recorded = {k: v for k, v in recorded.items() if k in params}
    return cls(**recorded)


def _chw(image: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` float32 in [0, 1] from an ``(H, W, 3)`` or ``(3, H, W)`` array (uint8 or float)."""
    a = np.asarray(image)
    if a.ndim != 3 or 3 not in (a.shape[0], a.shape[-1]):
        raise ValueError(f"need an image (H, W, 3) or (3, H, W), got shape {a.shape}")
    if a.shape[0] != 3:
        a = np.moveaxis(a, -1, 0)
    a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
    return np.ascontiguousarray(a)


def _curve_plan(metric: str, settings: Mapping[str, Any], image: np.ndarray, saliency: np.ndarray | None,
                seed: int | None, superpixels: np.ndarray | None, ordering: str) -> tuple[CurvePlan, np.ndarray]:
    """The plan the engine scored for one stored curve, and the image it perturbs ``(3, H, W)``."""
    if ordering not in CURVE_ORDERINGS:
        raise ValueError(f"unknown ordering {ordering!r}; valid orderings: {', '.join(CURVE_ORDERINGS)}")
    m = curve_metric(metric, settings)
    chw = _chw(image)
    shape = (int(chw.shape[1]), int(chw.shape[2]))
    if ordering == "random":
        if seed is None:
            raise ValueError("a random ordering needs its seed (the faithfulness row's seed column)")
        ranking = random_map(int(seed), shape)
    else:
        if saliency is None:
            raise ValueError(f"the {ordering} ordering needs the explanation's saliency map")
        ranking = np.asarray(saliency, dtype=np.float32)
        if ranking.shape != shape:
            raise ValueError(f"saliency has shape {ranking.shape}, the image {shape}")
        if ranking.max() <= ranking.min():
            raise ValueError("a constant saliency map has no order (status zero_saliency)")
    sp = None
    if m.uses_superpixels:
        if superpixels is None:
            raise ValueError(f"metric {metric!r} perturbs SLIC segments: pass the image's superpixel labels")
        labels = np.asarray(superpixels, dtype=np.int64)
        slic = {k: v for k, v in dict(settings.get("superpixels") or {}).items()
                if k in SlicSettings.__dataclass_fields__}
        sp = Superpixels(labels, int(labels.max()) + 1, SlicSettings(**slic))
    ctx = ImageContext(0, chw, sp)
    return m.plan(ctx, ranking, ordering == "lerf", (m.label, ordering)), chw


def perturbed_steps(metric: str, settings: Mapping[str, Any], image: np.ndarray, saliency: np.ndarray | None = None,
                    seed: int | None = None, superpixels: np.ndarray | None = None, ordering: str = "morf",
                    points: Sequence[int] | None = None) -> list[np.ndarray]:
    """The perturbed images ``(H, W, 3)`` (float32 in [0, 1]) behind a stored curve, at its ``points``
    (indices into the stored ``curve`` and ``x``; None: every point).

    ``settings``: the variant's recorded settings (``query.settings_of``); ``saliency``: the explanation's map
    ``(H, W)`` for ``morf`` / ``lerf``; ``seed``: the row's seed for ``random``; ``superpixels``: the image's SLIC
    labels for segment metrics (IROF). The metric's own ``plan`` and the engine's ``perturbed_image`` build
    them, so they are the images the metric scored (up to the 8-bit rounding of the stored image)."""
    plan, chw = _curve_plan(metric, settings, image, saliency, seed, superpixels, ordering)
    idx = np.arange(len(plan.steps)) if points is None else np.asarray(list(points), dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= len(plan.steps)):
        raise ValueError(f"curve points {idx.tolist()} out of range: the curve has {len(plan.steps)} points")
    x0 = torch.from_numpy(chw)
    fills: dict[object, torch.Tensor | None] = {}
    return [perturbed_image(x0, plan, int(plan.steps[j]), chw, fills).permute(1, 2, 0).numpy() for j in idx]


def perturbation_steps(metric: str, settings: Mapping[str, Any], image: np.ndarray,
                       saliency: np.ndarray | None = None, seed: int | None = None,
                       superpixels: np.ndarray | None = None, ordering: str = "morf") -> tuple[np.ndarray, np.ndarray]:
    """``(step_map, steps)`` of a stored curve (arguments as ``perturbed_steps``): ``step_map`` ``(H, W)`` the
    step at which each pixel is first perturbed (``n_steps``: never) and ``steps`` the number of steps done at
    each curve point."""
    plan, _ = _curve_plan(metric, settings, image, saliency, seed, superpixels, ordering)
    if plan.changed is not None:  # non-cumulative steps (ROAD, Faithfulness Correlation): first change
        changed = plan.changed if plan.changed.ndim == 3 else plan.changed.any(1)
        step_map = np.where(changed.any(0), changed.argmax(0), plan.n_steps)
    else:
        step_map = plan.step_map if plan.step_map.ndim == 2 else plan.step_map.min(0)
    return np.asarray(step_map, dtype=np.int64), np.asarray(plan.steps, dtype=np.int64)
