"""Precompute's planner: the study's units as a DAG of nodes, in the sequential run's priority order.

A :class:`Node` stands for one unit (or, for ``layer``, one model's pending ablation layers on one batch). Its
``deps`` are the nodes whose results it reads; its ``priority`` is its place in the order a sequential run takes
(arm by arm: images, then per seed the dense model's training, targets, explanations and sanity checks, each
pruning level and its explanations; then the seeds' noise floor; after every arm, the controls, then the layer
ablation), so deps always come first and the first arm is published first on any executor.

A node is *resolved* by the driver once its deps are done: :meth:`StudyPlanner.resolve` reads what the unit needs
from the store (superpixels, the dense model's maps and drawn targets, the checkpoint's stored hash) and returns a
:class:`Prepared`: the unit ids (``None`` when every one is in the journal already), the pure :class:`Job` to run
(``mtlx_core.precompute.jobs``), or a driver-side function for units that are only store reads (the seeds' noise
floor), and the claims (unit ids and run folders) no two running units may share.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlx_core.data.dataset import DatasetError
from mtlx_core.data.layout import get_dataset_spec
from mtlx_core.data.manifest import holds_synth_request
from mtlx_core.precompute.nodes import ArmData, Node, planning_batches
from mtlx_core.precompute.plan import arm_config
from mtlx_core.precompute.presets import ArmSpec
from mtlx_core.precompute.resolve import Resolver
from mtlx_core.precompute.units import make_batches
from mtlx_core.prune.registry import get_method

if TYPE_CHECKING:
    from mtlx_core.precompute.runner import Runner

logger = logging.getLogger(__name__)

PHASES = ("primary", "control", "ablation")


class StudyPlanner(Resolver):
    """The nodes of a study (``nodes``) and their resolution against the runner's store and journal."""

    def __init__(self, r: Runner, dry: bool = False) -> None:
        self.r, self.dry = r, dry  # dry: planning batches, no data read (``--plan``)
        self.arms: dict[str, ArmData] = {}
        self.nodes: dict[str, Node] = {}
        self._plans: dict[str, Any] = {}  # dense model id -> (layer plan, tasks, model) for sanity / layers

    # --- the DAG ---------------------------------------------------------------------------------------------
    def arm_data(self, pos: int, arm: ArmSpec) -> ArmData:
        from mtlx_core.train.loop import prepare_data

        r = self.r
        cfg = arm_config(arm, r.data, r.device)
        cfgs = [cfg] + [arm_config(arm, r.data, r.device, k) for k in range(1, r.seeds)]
        spec = get_dataset_spec(cfg.dataset)
        if self.dry:
            return ArmData(pos, arm, cfgs, spec, planning_batches(cfg, spec, r.n_images, r.settings.batch_images))
        if cfg.synth is not None and not r.data and Path(cfg.data_root).exists() \
                and not holds_synth_request(cfg.data_root, cfg.synth):
            raise DatasetError(f"{cfg.data_root} does not hold the synthetic rooms arm {arm.arm_id} asks for "
                               f"({cfg.synth}): delete the folder to render them again, or pass --data")
        if cfg.synth is not None and not Path(cfg.data_root).exists():
            from mtlx_core.data.synth import generate_synth

            logger.info("rendering the synthetic rooms into %s", cfg.data_root)
            generate_synth(Path(cfg.data_root), **cfg.synth, progress=r.progress)
        _, val = prepare_data(cfg)
        s = r.settings
        batches = make_batches(val, r.n_images, s.batch_images, s.slic, s.seed, s.image_sample)
        return ArmData(pos, arm, cfgs, spec, batches)

    def build(self) -> list[Node]:
        r = self.r
        for pos, arm in r.arms:
            self.arms[arm.arm_id] = self.arm_data(pos, arm)
        order: list[Node] = []

        def add(key: str, kind: str, arm_id: str, phase: str, deps: list[str], **args: Any) -> str:
            node = Node(key, kind, arm_id, phase, tuple(deps), len(order), args)
            order.append(node)
            self.nodes[key] = node
            return key

        for phase in PHASES:
            if phase == "control" and not r.preset.controls:
                continue
            if phase == "ablation" and not r.settings.ablation_layers:
                continue
            for _, arm in r.arms:
                self._arm_nodes(add, phase, self.arms[arm.arm_id])
        return order

    def _arm_nodes(self, add: Callable[..., str], phase: str, a: ArmData) -> None:
        aid = a.arm.arm_id
        imgs = [f"images|{aid}|{b.key}" for b in a.batches]
        if phase == "primary":
            for b, key in zip(a.batches, imgs, strict=True):
                add(key, "images", aid, phase, [], batch=b)
        dense_explains: list[str] = []
        for k in range(len(a.cfgs)):
            train, targets = f"train|{aid}|{k}", f"targets|{aid}|{k}"
            dense = [f"explain|{aid}|{k}|dense|{b.key}" for b in a.batches]

            def explains(model: str, which: str, ref: str | None, level: int | None, deps: list[str],
                         k: int = k, targets: str = targets, dense: list[str] = dense) -> None:
                for i, b in enumerate(a.batches):
                    extra = [dense[i]] if ref is not None else []
                    add(f"explain|{aid}|{k}|{which}|{b.key}", "explain", aid, phase,
                        [model, imgs[i], targets, *deps, *extra], batch=b, model=model, ref=ref, level=level, seed=k)

            if phase == "primary":
                add(train, "train", aid, phase, [], seed=k)
                add(targets, "targets", aid, phase, [train, *imgs], seed=k)
                explains(train, "dense", None, None, [])
                dense_explains += dense
                if self.r.preset.sanity is not None:
                    add(f"sanity|{aid}|{k}", "sanity", aid, phase, [train, imgs[0]], seed=k)
                self._prunes(add, explains, a, k, train)
            elif phase == "control":
                control = add(f"control|{aid}|{k}", "control", aid, phase, [train], seed=k)
                explains(control, "control", train, None, [])
            else:
                models = [("dense", train)] + [(f"{s:g}", f"prune|{aid}|{k}|{s:g}") for s in self._levels(a)]
                models += [("control", f"control|{aid}|{k}")] if self.r.preset.controls else []
                for which, model in models:
                    for b in a.batches:
                        add(f"layer|{aid}|{k}|{which}|{b.key}", "layer", aid, phase,
                            [f"explain|{aid}|{k}|{which}|{b.key}"], batch=b, model=model, seed=k)
        if phase == "primary" and len(a.cfgs) > 1:
            add(f"seed_similarity|{aid}", "seed_similarity", aid, phase, dense_explains)

    @staticmethod
    def _levels(a: ArmData) -> list[float]:
        return sorted(s for s in a.arm.sparsities if s > 0)

    def _prunes(self, add: Callable[..., str], explains: Callable[..., None], a: ArmData, k: int, train: str) -> None:
        arm, aid = a.arm, a.arm.arm_id
        method = get_method(arm.method)
        levels = [s for s in arm.sparsities if s > 0]
        ordered = sorted(levels)
        for s in levels:
            deps = [train] if method.needs_parent_weights(arm.variant) else []  # static DiSparse: no edge
            prev = method.previous_level(s)
            if prev is not None and prev in levels:
                deps.append(f"prune|{aid}|{k}|{prev:g}")
            node = add(f"prune|{aid}|{k}|{s:g}", "prune", aid, "primary", deps, level=s, seed=k)
            explains(node, f"{s:g}", train, ordered.index(s), [train])
