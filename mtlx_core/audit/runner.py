"""The audit's arm: precompute's executor (journal, resume, progress, snapshots, summary and verdict) on imported
runs instead of trained and pruned ones.

Units (``mtlx_core.precompute.units`` for the others):

- ``import:<arm_id>:<run_id>``: an imported run's ``models`` row (parameters and MACs at the data's image size,
  measured latency, the measured sparsity as target and achieved sparsity) and its ``task_metrics`` (the dense run
  also the trivial predictors'); the dense run's unit also writes the ``arms`` row;
- ``images:``, ``targets:`` and ``explain:`` as in a study: the dense model's targets are drawn and explained, then
  every pruned model explains them (similarity to the dense maps).

Controls (no fine-tuning schedule is known) and the layer ablation are off.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mtlx_core.data.dataset import MTLDataset
from mtlx_core.data.layout import DatasetSpec
from mtlx_core.explain.target_draw import TargetDraw
from mtlx_core.models.surgery import count_macs, count_params
from mtlx_core.precompute.jobs import explain_job, images_job, targets_job
from mtlx_core.precompute.nodes import draw_key
from mtlx_core.precompute.plan import Clock
from mtlx_core.precompute.presets import ArmSpec, ExplainSettings, StudyPreset
from mtlx_core.precompute.reads import dense_maps, stored_superpixels, wanted_targets
from mtlx_core.precompute.runner import Runner
from mtlx_core.precompute.units import DenseMaps, arm_row, make_batches, metric_rows, model_costs
from mtlx_core.prune.latency import LatencySettings
from mtlx_core.runs import CONFIG_FILE, METRICS_FILE, MODEL_FILE, load_run, read_json, run_dir, safe_torch_load
from mtlx_core.store.codec import state_hash
from mtlx_core.store.writer import UnitRows
from mtlx_core.tasks import Task, build_tasks

logger = logging.getLogger(__name__)

AUDIT_PRESET = "audit"


@dataclass(frozen=True)
class ImportedArm:
    """An arm of runs that exist already: the dense run and the runs pruned from it (``audit.imports``)."""

    arm: ArmSpec
    spec: DatasetSpec
    data_root: Path
    tasks: tuple[str, ...]
    dense_id: str
    pruned_ids: tuple[str, ...]


def audit_preset(arm: ArmSpec, settings: ExplainSettings, latency: LatencySettings) -> StudyPreset:
    return StudyPreset(AUDIT_PRESET, "an audit of imported checkpoints (one arm)", (arm,), settings,
                       controls=False, latency=latency)


class ImportedRunner(Runner):
    """Precompute's ``Runner`` on one :class:`ImportedArm` (see the module docstring)."""

    def __init__(self, given: ImportedArm, settings: ExplainSettings, store: Path, models_dir: Path,
                 device: str = "auto", progress: bool = True, latency: LatencySettings | None = None,
                 publish_every_s: float | None = None) -> None:
        self.given = given
        if settings.ablation_layers:
            raise ValueError("an audit computes no layer ablation: its settings must have no ablation_layers")
        super().__init__(audit_preset(given.arm, settings, latency or LatencySettings()), store, models_dir,
                         device=device, progress=progress, publish_every_s=publish_every_s)

    def task_meta(self) -> dict[str, dict[str, str]]:
        """The audited tasks' ``Task.describe()`` (the imported arm has no training preset to read them from)."""
        return {n: t.describe() for n, t in build_tasks(self.given.spec, list(self.given.tasks)).items()}

    def _check_preset(self) -> None:
        """Nothing to check here: ``audit.checks`` checked every input before the store was opened."""

    def _check_data(self) -> None:
        """Nothing to check here: ``audit.checks`` checked the data before the store was opened."""

    def _work(self, t0: float) -> None:
        """The imported arm, in process: images, the imported runs' rows, the dense model's targets, then every
        model's explanations (the same job functions as a study's units)."""
        for pos, arm in self.arms:
            self._run_arm(pos, arm)
            self.w.set_meta({"arms_complete": json.dumps([arm.arm_id])})
            self._publish()
            self.result.published_at[arm.arm_id] = time.monotonic() - t0
            logger.info("arm %s complete and published after %.0f s", arm.arm_id, time.monotonic() - t0)

    def _run_arm(self, pos: int, arm: ArmSpec) -> None:
        g = self.given
        # one audit per store: a store of another dense checkpoint is refused (StoreConflictError)
        self.w.ensure_meta({"audit": json.dumps({"arm_id": arm.arm_id, "dense": g.dense_id}, sort_keys=True)})
        tasks_list = list(g.tasks)
        val = MTLDataset(g.data_root, g.spec, "val", tasks=tasks_list)
        s = self.settings
        batches = make_batches(val, self.n_images, s.batch_images, s.slic, s.seed, s.image_sample)
        input_shape = tuple(batches[0].images.shape[1:])
        env = self.env()
        for b in batches:
            uid = f"images:{b.key}"
            if not self._is_done(uid):
                for unit in images_job(env, uid, arm.arm_id, b, g.spec.name, s.slic):
                    self._commit(unit)
        tasks = build_tasks(g.spec, tasks_list)
        for run_id in (g.dense_id, *g.pruned_ids):
            uid = f"import:{arm.arm_id}:{run_id}"
            if self._is_done(uid):
                continue
            t = Clock()
            rows = imported_rows(arm, run_id, self.models_dir, tasks, input_shape, self.device, self.preset.latency)
            if run_id == g.dense_id:
                rows["arms"] = [arm_row(arm, pos, rows["models"][0])]
            config = json.loads(rows["models"][0]["config"])
            self._commit(UnitRows(uid, "import", rows, arm.arm_id, run_id,
                                  {"source": config["imported"]["path"], "sha256": config["imported"]["sha256"],
                                   "level": config["sparsity"]["level"]}, *t.spent()))
        arch = str(load_run(g.dense_id, self.models_dir).config["architecture"]["arch"])
        task_k = tuple((t, s.targets_for(arch, t, arm.arm_id)) for t in tasks_list)
        draw = TargetDraw(s.max_targets, s.seed, tuple(x for x in task_k if x[1] != s.max_targets))
        ids = [i for b in batches for i in b.image_ids]
        uid = f"targets:{g.dense_id}:{draw_key(ids, draw)}"
        if not self._is_done(uid):
            for unit in targets_job(env, uid, arm.arm_id, g.dense_id, g.spec.name, s, batches, draw):
                self._commit(unit)
        bar = tqdm(total=(1 + len(g.pruned_ids)) * len(batches), desc=f"audit {arm.arm_id} explain", unit="batch",
                   disable=not self.progress, dynamic_ncols=True)
        try:
            for run_id in (g.dense_id, *g.pruned_ids):
                dense = None if run_id == g.dense_id else g.dense_id
                sha = self.w.con.execute("SELECT checkpoint_sha256 FROM models WHERE model_id = ?",
                                         [run_id]).fetchone()
                for b in batches:
                    uid = f"explain:{run_id}:{b.key}"
                    if not self._is_done(uid):
                        con = self.w.con
                        maps = DenseMaps(dense, dense_maps(con, dense, b, self.done)) if dense else None
                        wanted = wanted_targets(con, g.dense_id, b) if s.limits_targets() else None
                        for unit in explain_job(env, uid, arm.arm_id, run_id, g.spec.name, s, b,
                                                stored_superpixels(con, b, self.skey, s.slic), self.skey, wanted,
                                                maps, ("gradcam",), sha[0] if sha else None):
                            self._commit(unit)
                    bar.update(1)
        finally:
            bar.close()


def imported_rows(arm: ArmSpec, run_id: str, models_dir: Path, tasks: dict[str, Task],
                  input_shape: tuple[int, ...], device: str, latency: LatencySettings) -> dict[str, list[dict]]:
    """``models`` and ``task_metrics`` rows of an imported run folder (``audit.imports`` wrote its config)."""
    path = run_dir(run_id, models_dir)
    config, metrics = read_json(path / CONFIG_FILE), read_json(path / METRICS_FILE)
    model = load_run(run_id, models_dir).model
    pruning = config.get("pruning")
    if pruning is not None:
        params, macs = int(pruning["params_after"]), int(pruning["macs_after"])
        level, channels = float(config["sparsity"]["level"]), float(pruning["channels_removed"])
    else:
        params, macs, level, channels = count_params(model), count_macs(model, input_shape), 0.0, 0.0
    row: dict[str, Any] = {
        "model_id": run_id, "arm_id": arm.arm_id, "run_id": run_id, "arch": config["architecture"]["arch"],
        "dataset": config["dataset"], "tasks": list(config["tasks"]), "weighting": None,
        "pruning_method": pruning["method"] if pruning else None, "target_sparsity": level,
        "achieved_sparsity": level, "channel_sparsity": channels, "params": params, "macs": macs,
        "parent_id": config.get("parent_id"), "checkpoint": str((path / MODEL_FILE).resolve()),
        "checkpoint_sha256": state_hash(safe_torch_load(path / MODEL_FILE)),
        "config": json.dumps(config, sort_keys=True), "seed": int(config.get("seed", 0)),
        "code_version": config["code_version"], **model_costs(model, input_shape, device, latency)}
    rows = {"models": [row], "task_metrics": metric_rows(run_id, metrics["metrics"], tasks)}
    if "baselines" in metrics:
        rows["task_metrics"] += metric_rows(f"trivial:{config['dataset']}", metrics["baselines"], tasks)
    return rows

