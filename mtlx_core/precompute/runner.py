"""The precompute driver: plans the study's units (``planner``), runs them on an executor (``executors``: in
process, or on Ray) and is the only writer of the store.

Order (the planner's priority; ``--executor local`` runs it unit for unit): arm by arm, train the dense model,
store the image batches (PNG + SLIC), draw the dense model's targets over the whole image sample, explain the dense
model on every batch at its primary layers, run the sanity checks of its explanations (one ``sanity`` unit,
``preset.sanity``), then for each sparsity: prune + fine-tune, explain on every batch (similarity to the dense
maps). Every model's row carries its cost axes (parameters, MACs, measured latency; ``units.model_costs``). When
every arm is complete (and published), the training-budget controls (the dense model fine-tuned with the arm's
fine-tuning schedule at 0 % sparsity, ``mtlx_core.prune.control``), then the ablation layers of every model, so the
first arm is browsable as soon as its primary pass is done. Each unit's rows and journal row are one transaction
(``StoreWriter.commit``); a snapshot is published after every arm, every ``publish_every_s`` seconds and at the
end. A killed driver resumes from the journal on the next run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mtlx_core.data.layout import get_dataset_spec
from mtlx_core.plugins import loaded_plugins
from mtlx_core.precompute.executors import ExecutorSettings, execute, make_backend
from mtlx_core.precompute.faith_rows import metric_sets
from mtlx_core.precompute.jobs import Env
from mtlx_core.precompute.nodes import Node
from mtlx_core.precompute.plan import PrecomputeResult, arm_config, check_data, check_layers
from mtlx_core.precompute.planner import StudyPlanner
from mtlx_core.precompute.presets import ExplainSettings, StudyPreset
from mtlx_core.precompute.summary import log_result, summarize, verdict_summary
from mtlx_core.precompute.units import slic_key
from mtlx_core.store.writer import StoreWriter, UnitRows
from mtlx_core.tasks import build_tasks
from mtlx_core.train.loop import resolve_device

logger = logging.getLogger(__name__)

__all__ = ["PrecomputeResult", "Runner", "arm_config", "check_data", "run_precompute"]


class Runner:
    def __init__(self, preset: StudyPreset, store: Path, models_dir: Path, device: str = "auto",
                 images: int | None = None, data: dict[str, str] | None = None, progress: bool = True,
                 publish_every_s: float | None = None, arms: list[str] | None = None, seeds: int | None = None,
                 executor: ExecutorSettings | None = None, threads: int | None = None) -> None:
        self.preset, self.store, self.models_dir = preset, Path(store), Path(models_dir)
        valid = [a.arm_id for a in preset.arms]
        unknown = sorted(set(arms or ()) - set(valid))
        if unknown:
            raise ValueError(f"unknown arm(s) {unknown} in preset {preset.name!r}; valid arms: {', '.join(valid)}")
        self.arms = [(pos, a) for pos, a in enumerate(preset.arms) if not arms or a.arm_id in arms]
        self.executor = executor or ExecutorSettings()
        # the local executor resolves the device here; Ray workers resolve it themselves (a driver without a GPU
        # may drive GPU workers)
        self.device = str(resolve_device(device)) if self.executor.executor == "local" else device
        self.threads = threads
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

    def task_meta(self) -> dict[str, dict[str, str]]:
        """``Task.describe()`` of every task of the preset's arms (all of them, so that shards of one study write
        the same value): the app's labels and drawing of each task, read without importing the tasks."""
        out: dict[str, dict[str, str]] = {}
        for arm in self.preset.arms:
            cfg = arm_config(arm, self.data, "cpu")
            out.update({n: t.describe() for n, t in build_tasks(get_dataset_spec(cfg.dataset), cfg.tasks).items()})
        return out

    def _commit(self, unit: UnitRows) -> None:
        if unit.unit_id in self.done:  # a duplicate delivery (a retried task, or two arms sharing a unit)
            logger.debug("unit %s delivered twice: the second copy is dropped", unit.unit_id)
            return
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

    def job_settings(self, kind: str) -> ExplainSettings:
        """The explanation settings a job of ``kind`` runs with: its GPU share (``--gpus KIND=S``, 0 < S <= 1) sets
        its memory budget (``ExplainSettings.gpu_share``; outside the settings key)."""
        share = self.executor.gpus.get(kind)
        if share is None or not 0 < share <= 1 or share == self.settings.gpu_share:
            return self.settings
        return dataclasses.replace(self.settings, gpu_share=share)

    def env(self) -> Env:
        """How jobs run: in this process (local) or in worker processes (no progress bars there)."""
        local = self.executor.executor == "local"
        return Env(self.models_dir, self.device, None if local else self.threads, tuple(loaded_plugins()),
                   self.progress and local, self.preset.latency)

    def run(self) -> PrecomputeResult:
        t0 = time.monotonic()
        self._check_data()
        self.w = StoreWriter.open(self.store)
        try:
            self.w.ensure_meta({"preset": self.preset.name, "settings_key": self.settings.key(),
                                "settings": json.dumps(self.settings.key_fields(), sort_keys=True)})
            self.w.set_meta({"tasks": json.dumps(self.task_meta(), sort_keys=True)})
            self.done = self.w.done_units()
            self.w.set_meta({"arms_planned": json.dumps([a.arm_id for _, a in self.arms])})
            self.last_publish = time.monotonic()
            self._work(t0)
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

    # --- the study --------------------------------------------------------------------------------------
    def _work(self, t0: float) -> None:
        """Plan every node, run them on the executor, publish after each arm's phase."""
        planner = StudyPlanner(self)
        order = planner.build()
        left = Counter((n.phase, n.arm_id) for n in order)
        complete = json.loads(self.w.get_meta("arms_complete") or "[]")
        bar = tqdm(total=len(order), desc=f"{self.preset.name} units", unit="unit", disable=not self.progress,
                   dynamic_ncols=True)

        def finished(node: Node) -> None:
            nonlocal complete
            bar.update(1)
            group = (node.phase, node.arm_id)
            left[group] -= 1
            if left[group]:
                return
            self._publish()
            after = time.monotonic() - t0
            if node.phase == "primary":
                complete = [*dict.fromkeys([*complete, node.arm_id])]
                self.w.set_meta({"arms_complete": json.dumps(complete)})
                self._publish()
                self.result.published_at[node.arm_id] = after
                logger.info("arm %s complete and published after %.0f s", node.arm_id, after)
            elif node.phase == "control":
                logger.info("control of arm %s published after %.0f s", node.arm_id, after)
            else:
                logger.info("layer ablation of arm %s published after %.0f s", node.arm_id, after)

        backend = make_backend(self.executor, self.env())
        try:
            execute(order, planner.resolve, backend, self._commit, finished,
                    raise_first=self.executor.executor == "local")
        finally:
            bar.close()
            backend.close()


def run_precompute(preset: StudyPreset, store: str | Path, models_dir: str | Path, **kwargs: Any
                   ) -> PrecomputeResult:
    """Build (or finish, or verify nothing is left to do in) the study store of ``preset``."""
    return Runner(preset, Path(store), Path(models_dir), **kwargs).run()
