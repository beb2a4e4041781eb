"""Precompute's pure job functions: compute one unit (or one model's batch) and return its rows.

A job never touches the store: everything it reads from the store (superpixels, the dense model's maps, the drawn
targets, the stored checkpoint hash) the driver reads first and passes in (``mtlx_core.precompute.planner``), so
the same :class:`Job` runs in the driver's process (``--executor local``) or as a Ray task on another machine
(``--executor ray``). A job writes only its own run folder (training, pruning) and returns ``UnitRows``; the
driver commits them. Jobs are picklable: plain data and the names of registered things, never open handles.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlx_core.data.layout import get_dataset_spec
from mtlx_core.explain.sanity import SanitySettings
from mtlx_core.explain.superpixels import SlicSettings, Superpixels
from mtlx_core.explain.target_draw import TargetDraw
from mtlx_core.precompute.explainer import ModelExplainer
from mtlx_core.precompute.plan import Clock
from mtlx_core.precompute.presets import ArmSpec, ExplainSettings
from mtlx_core.precompute.reads import Wanted
from mtlx_core.precompute.sanity_unit import sanity_rows
from mtlx_core.precompute.units import (
    Batch,
    DenseMaps,
    arm_row,
    explain_tasks,
    images_unit,
    model_rows,
    verify_checkpoint,
)
from mtlx_core.prune.latency import LatencySettings
from mtlx_core.store.writer import UnitRows
from mtlx_core.tasks import build_tasks
from mtlx_core.train import TrainConfig

logger = logging.getLogger(__name__)

#: explainers kept per process (a model's batches arrive one after the other: loading it once per batch would
#: cost a checkpoint read and a layer plan per batch)
EXPLAINER_CACHE = 2
_explainers: OrderedDict[tuple, ModelExplainer] = OrderedDict()


@dataclass
class Env:
    """Where and how a job runs: the run folders, the device (resolved in the worker: a driver without a GPU
    may drive GPU workers), torch threads, plugins to import and whether to show progress bars."""

    models_dir: Path
    device: str = "auto"
    threads: int | None = None
    plugins: tuple[str, ...] = ()
    progress: bool = False
    latency: LatencySettings = field(default_factory=LatencySettings)


@dataclass
class Job:
    """One unit of work: ``fn`` (a name in ``JOBS``) called with ``kwargs`` and the :class:`Env`."""

    kind: str
    arm_id: str
    fn: str
    kwargs: dict[str, Any]


def _device(env: Env) -> str:
    from mtlx_core.train.loop import resolve_device

    return str(resolve_device(env.device))


def _explainer(env: Env, model_id: str, spec_name: str, settings: ExplainSettings, arm_id: str,
               expected_sha: str | None) -> ModelExplainer:
    """The model's explainer, cached per process; the checkpoint is checked against the store's hash once per
    load."""
    from mtlx_core.runs import load_run

    device = _device(env)
    key = (str(env.models_dir), model_id, spec_name, settings.key(), arm_id, device, expected_sha)
    if key in _explainers:
        _explainers.move_to_end(key)
        return _explainers[key]
    run = load_run(model_id, env.models_dir)
    verify_checkpoint(run, expected_sha)
    explainer = ModelExplainer(run, explain_tasks(run, get_dataset_spec(spec_name), settings), settings, device,
                               arm_id)
    _explainers[key] = explainer
    while len(_explainers) > EXPLAINER_CACHE:
        _explainers.popitem(last=False)
    return explainer


# --- the job functions ------------------------------------------------------------------------------------

def images_job(env: Env, uid: str, arm_id: str, batch: Batch, dataset: str, slic: SlicSettings) -> list[UnitRows]:
    t = Clock()
    return [UnitRows(uid, "images", images_unit(batch, dataset, slic), arm_id, None,
                     {"indices": batch.indices, "image_ids": batch.image_ids}, *t.spent())]


def train_job(env: Env, uid: str, arm: ArmSpec, position: int, cfg: TrainConfig, input_shape: tuple[int, ...],
              first: bool) -> list[UnitRows]:
    from mtlx_core.train import train

    t = Clock()
    device = _device(env)
    res = train(dataclasses.replace(cfg, device=device), env.models_dir, progress=env.progress)
    tasks = build_tasks(get_dataset_spec(cfg.dataset), cfg.tasks)
    rows = model_rows(arm, res.run_id, env.models_dir, tasks, 0.0, input_shape, device, env.latency)
    if first:
        rows["arms"] = [arm_row(arm, position, rows["models"][0])]
    return [UnitRows(uid, "train", rows, arm.arm_id, res.run_id, {"preset": cfg.preset, "seed": cfg.seed},
                     *t.spent())]


def prune_job(env: Env, uid: str, arm: ArmSpec, cfg: TrainConfig, dense_id: str, sparsity: float,
              input_shape: tuple[int, ...]) -> list[UnitRows]:
    from mtlx_core.prune.pipeline import prune_run

    t = Clock()
    device = _device(env)
    res = prune_run(dense_id, arm.method, sparsity, variant=arm.variant, finetune_iterations=arm.finetune_iterations,
                    preset=arm.prune_preset, models_dir=env.models_dir, device=device, data_root=cfg.data_root,
                    progress=env.progress, parent_config=cfg)
    tasks = build_tasks(get_dataset_spec(cfg.dataset), cfg.tasks)
    rows = model_rows(arm, res.run_id, env.models_dir, tasks, sparsity, input_shape, device, env.latency)
    return [UnitRows(uid, "prune", rows, arm.arm_id, res.run_id, {"parent": dense_id, "sparsity": sparsity},
                     *t.spent())]


def control_job(env: Env, uid: str, arm: ArmSpec, cfg: TrainConfig, dense_id: str, tag: str,
                input_shape: tuple[int, ...]) -> list[UnitRows]:
    from mtlx_core.prune.control import control_run

    t = Clock()
    device = _device(env)
    res = control_run(dense_id, arm.method, variant=arm.variant, finetune_iterations=arm.finetune_iterations,
                      preset=arm.prune_preset, models_dir=env.models_dir, device=device, data_root=cfg.data_root,
                      progress=env.progress)
    tasks = build_tasks(get_dataset_spec(cfg.dataset), cfg.tasks)
    rows = model_rows(arm, res.run_id, env.models_dir, tasks, 0.0, input_shape, device, env.latency)
    return [UnitRows(uid, "control", rows, arm.arm_id, res.run_id, {"parent": dense_id, "method": tag}, *t.spent())]


def targets_job(env: Env, uid: str, arm_id: str, dense_id: str, spec_name: str, settings: ExplainSettings,
                batches: list[Batch], draw: TargetDraw, expected_sha: str | None = None) -> list[UnitRows]:
    t = Clock()
    explainer = _explainer(env, dense_id, spec_name, settings, arm_id, expected_sha)
    rows = explainer.draw_rows(dense_id, batches, draw)
    n = sum(len(b.image_ids) for b in batches)
    return [UnitRows(uid, "targets", {"target_draws": rows}, arm_id, dense_id, {**draw.to_dict(), "images": n},
                     *t.spent())]


def explain_job(env: Env, uid: str, arm_id: str, model_id: str, spec_name: str, settings: ExplainSettings,
                batch: Batch, sps: list[Superpixels], skey: str, wanted: Wanted | None, dense: DenseMaps | None,
                explainers: tuple[str, ...], expected_sha: str | None) -> list[UnitRows]:
    """One model's primary unit of one batch (every explainer of ``explainers``)."""
    t = Clock()
    explainer = _explainer(env, model_id, spec_name, settings, arm_id, expected_sha)
    rows = explainer.run_batch(model_id, batch, sps, skey, wanted, dense, explainers)
    return [UnitRows(uid, "explain", rows, arm_id, model_id,
                     {"batch": batch.key, "indices": batch.indices, "dense": dense.model_id if dense else None,
                      "layers": explainer.plan.primary, "explainers": list(explainers)}, *t.spent())]


def layer_job(env: Env, uids: dict[str, str], arm_id: str, model_id: str, spec_name: str,
              settings: ExplainSettings, batch: Batch, sps: list[Superpixels], skey: str, wanted: Wanted,
              expected_sha: str | None) -> list[UnitRows]:
    """The ablation ``layer`` units ``{layer: unit_id}`` of one model on one batch (one unit per layer)."""
    explainer = _explainer(env, model_id, spec_name, settings, arm_id, expected_sha)
    out = []
    for lay, uid in uids.items():
        t = Clock()
        rows = explainer.run_layer(model_id, batch, sps, skey, lay, wanted)
        out.append(UnitRows(uid, "layer", rows, arm_id, model_id,
                            {"batch": batch.key, "indices": batch.indices, "layer": lay}, *t.spent()))
    return out


def sanity_job(env: Env, uid: str, arm_id: str, dense_id: str, spec_name: str, settings: ExplainSettings,
               batch: Batch, check: SanitySettings, names: list[str], paths: dict[str, str], key: str,
               primary: dict[str, str]) -> list[UnitRows]:
    from mtlx_core.runs import load_run

    t = Clock()
    device = _device(env)
    run = load_run(dense_id, env.models_dir)
    tasks = explain_tasks(run, get_dataset_spec(spec_name), settings)
    model = run.model.to(device).eval()
    n = min(check.images, len(batch.image_ids))
    rows = sanity_rows(dense_id, model, batch.images[:n].to(device), tasks, names, paths, check, key, primary)
    return [UnitRows(uid, "sanity", {"sanity": rows}, arm_id, dense_id,
                     {"explainers": names, "image_ids": batch.image_ids[:n], **check.to_dict()}, *t.spent())]


JOBS: dict[str, Callable[..., list[UnitRows]]] = {
    "images": images_job, "train": train_job, "prune": prune_job, "control": control_job, "targets": targets_job,
    "explain": explain_job, "layer": layer_job, "sanity": sanity_job}


def job_threads(job: Job) -> int | None:
    """The torch threads a training, pruning or control job runs with (its ``TrainConfig.threads``; None: the
    worker's)."""
    cfg = job.kwargs.get("cfg") if job.fn in ("train", "prune", "control") else None
    return cfg.threads if isinstance(cfg, TrainConfig) else None


def run_job(job: Job, env: Env) -> list[UnitRows]:
    """Run ``job`` in this process (the local executor, or a Ray worker)."""
    if env.plugins:
        from mtlx_core.plugins import load_plugins

        load_plugins(env.plugins)
    if env.threads:
        import torch

        if torch.get_num_threads() != env.threads:
            torch.set_num_threads(env.threads)
    if job.fn not in JOBS:
        raise KeyError(f"unknown job function {job.fn!r}; valid: {', '.join(JOBS)}")
    return JOBS[job.fn](env, **job.kwargs)
