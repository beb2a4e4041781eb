"""The precompute executor: arm by arm, unit by unit, skipping journaled units, publishing snapshots.

Order inside an arm: train the dense model, store the image batches (PNG + SLIC), draw the dense model's
targets over the whole image sample, explain the dense model on every batch at its primary layers, run the sanity
checks of its explanations (one ``sanity`` unit, ``preset.sanity``; ``mtlx_core.precompute.sanity_unit``), then for
each sparsity: prune + fine-tune, explain on every batch (similarity to the dense maps). Every model's row
carries its cost axes (parameters, MACs, measured latency; ``units.model_costs``). When every arm is complete
(and published), a second pass trains and explains each arm's training-budget control (the dense model
fine-tuned with the arm's fine-tuning schedule at 0 % sparsity, ``mtlx_core.prune.control``; similarity to the
dense maps too), and a third adds the ablation layers of every model, arm by arm, so the first arm is browsable
as soon as its primary pass is done. Each unit's rows and journal row are one transaction
(``StoreWriter.commit``); a snapshot is published after every arm, every ``publish_every_s`` seconds and at the
end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mtlx_core.data.layout import get_dataset_spec
from mtlx_core.explain.target_draw import TargetDraw
from mtlx_core.precompute.check_units import sanity_unit, seed_noise_units
from mtlx_core.precompute.explainer import ModelExplainer, layer_plan
from mtlx_core.precompute.faith_rows import metric_sets
from mtlx_core.precompute.plan import Clock, PrecomputeResult, arm_config, check_data, check_layers
from mtlx_core.precompute.presets import ArmSpec, StudyPreset
from mtlx_core.precompute.reads import dense_maps, explained_targets, stored_superpixels, wanted_targets
from mtlx_core.precompute.summary import log_result, summarize, verdict_summary
from mtlx_core.precompute.units import (
    Batch,
    DenseMaps,
    arm_row,
    explain_tasks,
    images_unit,
    make_batches,
    model_rows,
    slic_key,
    verify_checkpoint,
)
from mtlx_core.prune.control import control_run
from mtlx_core.prune.pipeline import prune_run
from mtlx_core.runs import load_run
from mtlx_core.store.writer import StoreWriter, UnitRows
from mtlx_core.tasks import build_tasks
from mtlx_core.train import TrainConfig, train
from mtlx_core.train.loop import prepare_data, resolve_device

logger = logging.getLogger(__name__)

__all__ = ["PrecomputeResult", "Runner", "arm_config", "check_data", "run_precompute"]


class Runner:
    def __init__(self, preset: StudyPreset, store: Path, models_dir: Path, device: str = "auto",
                 images: int | None = None, data: dict[str, str] | None = None, progress: bool = True,
                 publish_every_s: float | None = None, arms: list[str] | None = None, seeds: int | None = None
                 ) -> None:
        self.preset, self.store, self.models_dir = preset, Path(store), Path(models_dir)
        valid = [a.arm_id for a in preset.arms]
        unknown = sorted(set(arms or ()) - set(valid))
        if unknown:
            raise ValueError(f"unknown arm(s) {unknown} in preset {preset.name!r}; valid arms: {', '.join(valid)}")
        self.arms = [(pos, a) for pos, a in enumerate(preset.arms) if not arms or a.arm_id in arms]
        self.device = str(resolve_device(device))
        self.settings = preset.explain
        self.n_images = images if images is not None else self.settings.images
        if self.n_images < 1:
            raise ValueError(f"--images must be at least 1, got {self.n_images}")
        self.data = data or {}
        self.seeds = preset.seeds if seeds is None else seeds
        if self.seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {self.seeds}")
        self.progress = progress
        self.publish_every_s = preset.publish_every_s if publish_every_s is None else publish_every_s
        self.result = PrecomputeResult(self.store)
        self.skey = slic_key(self.settings.slic)
        self.metrics = self.settings.metric_names()
        metric_sets(self.settings)  # options and dependencies checked before any work starts
        self._check_preset()

    # --- plumbing ---------------------------------------------------------------------------------------
    def _check_preset(self) -> None:
        """Checks before any work (a runner of given models, ``mtlx_core.audit``, checks its own inputs)."""
        check_layers(self.preset)

    def _check_data(self) -> None:
        check_data([a for _, a in self.arms], self.data)

    def _commit(self, unit: UnitRows) -> None:
        self.w.set_meta({"status": "running"})  # until the end: a snapshot of a killed run says so (no-op after)
        self.w.commit(unit)
        self.done[unit.unit_id] = unit.model_id
        self.result.executed[unit.kind] += 1
        logger.info("unit done: %s (%.1f s, rows %s)", unit.unit_id, unit.seconds, unit.count())
        if time.monotonic() - self.last_publish > self.publish_every_s:
            self._publish()

    def _publish(self) -> None:
        self.w.publish()
        self.last_publish = time.monotonic()

    def _is_done(self, unit_id: str) -> bool:
        if unit_id in self.done:
            self.result.skipped.add(unit_id)
            return True
        return False

    def run(self) -> PrecomputeResult:
        t0 = time.monotonic()
        self._check_data()
        self.w = StoreWriter.open(self.store)
        try:
            self.w.ensure_meta({"preset": self.preset.name, "settings_key": self.settings.key(),
                                "settings": json.dumps(self.settings.key_fields(), sort_keys=True)})
            self.done = self.w.done_units()
            complete = json.loads(self.w.get_meta("arms_complete") or "[]")
            self.w.set_meta({"arms_planned": json.dumps([a.arm_id for _, a in self.arms])})
            self.last_publish = time.monotonic()
            for pos, arm in self.arms:
                self._run_arm(pos, arm, "primary")
                complete = [*dict.fromkeys([*complete, arm.arm_id])]
                self.w.set_meta({"arms_complete": json.dumps(complete)})
                self._publish()
                self.result.published_at[arm.arm_id] = time.monotonic() - t0
                logger.info("arm %s complete and published after %.0f s", arm.arm_id, time.monotonic() - t0)
            if self.preset.controls:  # the training-budget controls once every arm's study is browsable
                for pos, arm in self.arms:
                    self._run_arm(pos, arm, "control")
                    self._publish()
                    logger.info("control of arm %s published after %.0f s", arm.arm_id, time.monotonic() - t0)
            if self.settings.ablation_layers:  # the layer ablation once every arm's study is browsable
                for pos, arm in self.arms:
                    self._run_arm(pos, arm, "ablation")
                    self._publish()
                    logger.info("layer ablation of arm %s published after %.0f s", arm.arm_id,
                                time.monotonic() - t0)
            self.result.summary = summarize(self.w.con, "irof" if "irof" in self.metrics else self.metrics[0])
            verdict = verdict_summary(self.w.con)
            self.result.timing = self.w.con.execute(
                "SELECT kind, count(*), sum(seconds), sum(cpu_seconds) FROM units GROUP BY kind ORDER BY kind"
            ).fetchall()
            self.w.set_meta({"status": "complete"})
            self._publish()
        except BaseException:
            self.w.close()
            raise
        self.w.close(remove_work=True)
        self.result.seconds = time.monotonic() - t0
        log_result(self.result, verdict)
        return self.result

    # --- one arm ----------------------------------------------------------------------------------------
    def _run_arm(self, pos: int, arm: ArmSpec, phase: str) -> None:
        """``primary``: train, images, targets, then per model prune and explain at the primary layers;
        ``control``: the arm's training-budget control, trained and explained at the primary layers;
        ``ablation``: the ablation layers of every model of the arm, control included (everything else is in the
        journal)."""
        cfg = arm_config(arm, self.data, self.device)
        if cfg.synth is not None and not Path(cfg.data_root).exists():
            from mtlx_core.data.synth import generate_synth

            logger.info("rendering the synthetic rooms into %s", cfg.data_root)
            generate_synth(Path(cfg.data_root), **cfg.synth, progress=self.progress)
        _, val = prepare_data(cfg)
        spec = get_dataset_spec(cfg.dataset)
        tasks = build_tasks(spec, cfg.tasks)
        batches = make_batches(val, self.n_images, self.settings.batch_images, self.settings.slic,
                               self.settings.seed, self.settings.image_sample)
        input_shape = tuple(batches[0].images.shape[1:])
        for b in batches:
            uid = f"images:{b.key}"
            if not self._is_done(uid):
                t = Clock()
                self._commit(UnitRows(uid, "images", images_unit(b, spec.name, self.settings.slic), arm.arm_id,
                                      None, {"indices": b.indices, "image_ids": b.image_ids},
                                      *t.spent()))
        dense_ids = []
        for k in range(self.seeds):  # replicates: the dense model trained with the preset's seed + k, each pruned
            seed_cfg = cfg if k == 0 else arm_config(arm, self.data, self.device, k)
            self._run_seed(pos, arm, phase, seed_cfg, spec, tasks, batches, input_shape, first=k == 0)
            dense_ids.append(seed_cfg.run_id())
        if phase == "primary":
            seed_noise_units(self, arm, dense_ids, [i for b in batches for i in b.image_ids])

    def _run_seed(self, pos: int, arm: ArmSpec, phase: str, cfg: TrainConfig, spec: Any, tasks: dict,
                  batches: list[Batch], input_shape: tuple[int, ...], first: bool) -> None:
        """One dense model of the arm (one seed; ``first``: the arm's own, in ``arms``) and everything pruned from
        it, in ``phase``."""
        dense_id = cfg.run_id()
        uid = f"train:{arm.arm_id}:{dense_id}"
        if not self._is_done(uid):
            t = Clock()
            res = train(cfg, self.models_dir, progress=self.progress)
            rows = model_rows(arm, res.run_id, self.models_dir, tasks, 0.0, input_shape, self.device,
                              self.preset.latency)
            if first:
                rows["arms"] = [arm_row(arm, pos, rows["models"][0])]
            self._commit(UnitRows(uid, "train", rows, arm.arm_id, res.run_id, {"preset": cfg.preset,
                                                                              "seed": cfg.seed}, *t.spent()))
        self._draw_targets(arm, spec, dense_id, cfg.arch, cfg.tasks, batches)
        levels = [s for s in arm.sparsities if s > 0] if phase != "control" else []
        with_control = phase == "control" or (phase == "ablation" and self.preset.controls)
        what = {"primary": "explain", "control": "control", "ablation": "layers"}[phase]
        n_models = (0 if phase == "control" else 1 + len(levels)) + int(with_control)
        seed = f" seed {cfg.seed}" if self.seeds > 1 else ""
        bar = tqdm(total=n_models * len(batches), desc=f"[{pos + 1}/{len(self.preset.arms)}] "
                   f"{arm.arm_id}{seed} {what}", unit="batch", disable=not self.progress, dynamic_ncols=True)
        # every model of an arm has the dense model's architecture and tasks, hence its layer plan
        layers = ([] if phase != "ablation" else layer_plan(load_run(dense_id, self.models_dir).model,
                                                            tasks, self.settings, arm.arm_id).ablation_layers)
        try:
            which = self.settings.explainers_for  # the sub-grid of the extra explainers
            if phase != "control":
                self._explain_model(arm, spec, dense_id, None, batches, bar, layers, which(True, None))
            if phase == "primary" and self.preset.sanity is not None:
                sanity_unit(self, arm, spec, dense_id, batches[0], self.preset.sanity)
            for s in levels:
                model_id = self._prune(arm, cfg, dense_id, s, tasks, input_shape)
                self._explain_model(arm, spec, model_id, dense_id, batches, bar, layers,
                                    which(False, sorted(levels).index(s)))
            if with_control:
                model_id = self._control(arm, cfg, dense_id, tasks, input_shape)
                self._explain_model(arm, spec, model_id, dense_id, batches, bar, layers, which(False, None))
        finally:
            bar.close()

    def _prune(self, arm: ArmSpec, cfg: TrainConfig, dense_id: str, sparsity: float, tasks: dict,
               input_shape: tuple[int, ...]) -> str:
        tag = arm.method + (f"-{arm.variant}" if arm.variant else "")
        uid = f"prune:{dense_id}:{tag}:{sparsity:g}:{arm.finetune_iterations or arm.prune_preset or 'default'}"
        if not self._is_done(uid):
            t = Clock()
            res = prune_run(dense_id, arm.method, sparsity, variant=arm.variant,
                            finetune_iterations=arm.finetune_iterations, preset=arm.prune_preset,
                            models_dir=self.models_dir, device=self.device, data_root=cfg.data_root,
                            progress=self.progress)
            rows = model_rows(arm, res.run_id, self.models_dir, tasks, sparsity, input_shape, self.device,
                              self.preset.latency)
            self._commit(UnitRows(uid, "prune", rows, arm.arm_id, res.run_id,
                                  {"parent": dense_id, "sparsity": sparsity}, *t.spent()))
        model_id = self.done[uid]
        assert model_id is not None
        return model_id

    def _control(self, arm: ArmSpec, cfg: TrainConfig, dense_id: str, tasks: dict,
                 input_shape: tuple[int, ...]) -> str:
        """The arm's training-budget control (``mtlx_core.prune.control``): one ``control`` unit."""
        tag = arm.method + (f"-{arm.variant}" if arm.variant else "")
        uid = f"control:{dense_id}:{tag}:{arm.finetune_iterations or arm.prune_preset or 'default'}"
        if not self._is_done(uid):
            t = Clock()
            res = control_run(dense_id, arm.method, variant=arm.variant, finetune_iterations=arm.finetune_iterations,
                              preset=arm.prune_preset, models_dir=self.models_dir, device=self.device,
                              data_root=cfg.data_root, progress=self.progress)
            rows = model_rows(arm, res.run_id, self.models_dir, tasks, 0.0, input_shape, self.device,
                              self.preset.latency)
            self._commit(UnitRows(uid, "control", rows, arm.arm_id, res.run_id,
                                  {"parent": dense_id, "method": tag}, *t.spent()))
        model_id = self.done[uid]
        assert model_id is not None
        return model_id

    # --- the dense model's targets -----------------------------------------------------------------------
    def _draw_targets(self, arm: ArmSpec, spec: Any, dense_id: str, arch: str, task_names: Sequence[str],
                      batches: list[Batch]) -> None:
        """The dense model's candidate targets on the whole sample and the seeded stratified draw."""
        task_k = tuple((name, self.settings.targets_for(arch, name, arm.arm_id)) for name in task_names)
        draw = TargetDraw(self.settings.max_targets, self.settings.seed,
                          tuple(x for x in task_k if x[1] != self.settings.max_targets))
        ids = [i for b in batches for i in b.image_ids]
        key = hashlib.sha256(json.dumps([ids, draw.to_dict()], sort_keys=True).encode()).hexdigest()[:16]
        uid = f"targets:{dense_id}:{key}"
        if self._is_done(uid):
            return
        t = Clock()
        run = load_run(dense_id, self.models_dir)
        explainer = ModelExplainer(run, explain_tasks(run, spec, self.settings), self.settings, self.device,
                                   arm.arm_id)
        rows = explainer.draw_rows(dense_id, batches, draw)
        self._commit(UnitRows(uid, "targets", {"target_draws": rows}, arm.arm_id, dense_id,
                              {**draw.to_dict(), "images": len(ids)}, *t.spent()))

    # --- explanations of one model ----------------------------------------------------------------------
    def _explain_model(self, arm: ArmSpec, spec: Any, model_id: str, dense_id: str | None,
                       batches: list[Batch], bar: tqdm, layers: list[str],
                       explainers: tuple[str, ...] = ("gradcam",)) -> None:
        """The model's primary units of every batch (each of ``explainers``), then its ``layers`` (ablation)
        units (Grad-CAM)."""
        pending = [b for b in batches if not self._is_done(f"explain:{model_id}:{b.key}")
                   or any(not self._is_done(f"layer:{model_id}:{b.key}:{lay}") for lay in layers)]
        bar.update(len(batches) - len(pending))
        if not pending:
            return
        run = load_run(model_id, self.models_dir)
        tasks = explain_tasks(run, spec, self.settings)
        sha = self.w.con.execute("SELECT checkpoint_sha256 FROM models WHERE model_id = ?", [model_id]).fetchone()
        verify_checkpoint(run, sha[0] if sha else None)
        explainer = ModelExplainer(run, tasks, self.settings, self.device, arm.arm_id)
        for b in pending:
            sps = stored_superpixels(self.w.con, b, self.skey, self.settings.slic)
            uid = f"explain:{model_id}:{b.key}"
            if not self._is_done(uid):
                t = Clock()
                con = self.w.con
                dense = DenseMaps(dense_id, dense_maps(con, dense_id, b, self.done)) if dense_id is not None else None
                limited = self.settings.limits_targets()
                wanted = wanted_targets(con, dense_id or model_id, b) if limited else None
                rows = explainer.run_batch(model_id, b, sps, self.skey, wanted, dense, explainers)
                self._commit(UnitRows(uid, "explain", rows, arm.arm_id, model_id,
                                      {"batch": b.key, "indices": b.indices, "dense": dense_id,
                                       "layers": explainer.plan.primary, "explainers": list(explainers)},
                                      *t.spent()))
            for lay in layers:
                uid = f"layer:{model_id}:{b.key}:{lay}"
                if self._is_done(uid):
                    continue
                t = Clock()
                rows = explainer.run_layer(model_id, b, sps, self.skey, lay, explained_targets(self.w.con, model_id, b))
                self._commit(UnitRows(uid, "layer", rows, arm.arm_id, model_id,
                                      {"batch": b.key, "indices": b.indices, "layer": lay}, *t.spent()))
            bar.update(1)
        del explainer, run


def run_precompute(preset: StudyPreset, store: str | Path, models_dir: str | Path, **kwargs: Any
                   ) -> PrecomputeResult:
    """Build (or finish, or verify nothing is left to do in) the study store of ``preset``."""
    return Runner(preset, Path(store), Path(models_dir), **kwargs).run()
