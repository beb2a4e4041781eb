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

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlx_core.data.dataset import DatasetError
from mtlx_core.data.layout import get_dataset_spec
from mtlx_core.data.manifest import holds_synth_request
from mtlx_core.explain.target_draw import TargetDraw
from mtlx_core.models.layers import resolve_layer_name
from mtlx_core.precompute.explainer import layer_plan
from mtlx_core.precompute.jobs import Job
from mtlx_core.precompute.plan import Clock, arm_config
from mtlx_core.precompute.presets import ArmSpec
from mtlx_core.precompute.reads import dense_maps, explained_targets, stored_superpixels, wanted_targets
from mtlx_core.precompute.sanity_unit import sanity_key
from mtlx_core.precompute.seed_noise import seed_similarity_rows
from mtlx_core.precompute.units import Batch, DenseMaps, explain_tasks, make_batches
from mtlx_core.prune.registry import get_method
from mtlx_core.runs import load_run
from mtlx_core.store.writer import UnitRows
from mtlx_core.train import TrainConfig

if TYPE_CHECKING:
    from mtlx_core.precompute.runner import Runner

logger = logging.getLogger(__name__)

PHASES = ("primary", "control", "ablation")


@dataclass
class Node:
    key: str
    kind: str
    arm_id: str
    phase: str
    deps: tuple[str, ...]
    priority: int = 0
    args: dict[str, Any] = field(default_factory=dict)  # what resolve needs (batch, seed, level, ...)


@dataclass
class Prepared:
    uids: list[str]
    job: Job | None = None
    local: Callable[[], list[UnitRows]] | None = None  # driver-side units (store reads only)
    claims: frozenset[str] = frozenset()


@dataclass
class ArmData:
    """What the driver knows of an arm before any unit runs: its seeds' training configs and its image batches."""

    pos: int
    arm: ArmSpec
    cfgs: list[TrainConfig]
    spec: Any
    batches: list[Batch]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.batches[0].images.shape[1:])


def draw_key(image_ids: list[str], draw: TargetDraw) -> str:
    """The key of a target draw over these images (the ``targets`` unit id's last part)."""
    return hashlib.sha256(json.dumps([image_ids, draw.to_dict()], sort_keys=True).encode()).hexdigest()[:16]


def placeholder_batches(cfg: TrainConfig, spec: Any, n_images: int, batch_images: int) -> list[Batch]:
    """Batches of the right count and image size without reading data (the plan mode): keys ``<dataset>-b<i>``."""
    import torch

    h, w = (cfg.synth["height"], cfg.synth["width"]) if cfg.synth else (spec.height, spec.width)
    out = []
    for i, start in enumerate(range(0, n_images, batch_images)):
        idx = list(range(start, min(n_images, start + batch_images)))
        out.append(Batch(f"{cfg.dataset}-b{i}", idx, [f"{cfg.dataset}-{j}" for j in idx],
                         torch.empty((len(idx), 3, h, w))))
    return out


def _tag(arm: ArmSpec) -> str:
    return arm.method + (f"-{arm.variant}" if arm.variant else "")


def _ft(arm: ArmSpec) -> str:
    return str(arm.finetune_iterations or arm.prune_preset or "default")


class StudyPlanner:
    """The nodes of a study (``nodes``) and their resolution against the runner's store and journal."""

    def __init__(self, r: Runner, dry: bool = False) -> None:
        self.r, self.dry = r, dry  # dry: placeholder batches, no data read (``--plan``)
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
            return ArmData(pos, arm, cfgs, spec, placeholder_batches(cfg, spec, r.n_images, r.settings.batch_images))
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

    # --- resolution ------------------------------------------------------------------------------------------
    def unit_of(self, node: Node) -> str:
        """The journal id of a model-making node (train, prune, control), known before it runs."""
        a = self.arms[node.arm_id]
        dense_id = a.cfgs[node.args["seed"]].run_id()
        if node.kind == "train":
            return f"train:{a.arm.arm_id}:{dense_id}"
        if node.kind == "prune":
            return f"prune:{dense_id}:{_tag(a.arm)}:{node.args['level']:g}:{_ft(a.arm)}"
        return f"control:{dense_id}:{_tag(a.arm)}:{_ft(a.arm)}"

    def model_id(self, key: str) -> str:
        model = self.r.done[self.unit_of(self.nodes[key])]
        assert model is not None
        return model

    def _sha(self, model_id: str) -> str | None:
        row = self.r.w.con.execute("SELECT checkpoint_sha256 FROM models WHERE model_id = ?", [model_id]).fetchone()
        return row[0] if row else None

    def _dense_plan(self, a: ArmData, dense_id: str) -> tuple[Any, dict, Any]:
        if dense_id not in self._plans:
            run = load_run(dense_id, self.r.models_dir)
            tasks = explain_tasks(run, a.spec, self.r.settings)
            self._plans[dense_id] = (layer_plan(run.model, tasks, self.r.settings, a.arm.arm_id), tasks, run.model)
        return self._plans[dense_id]

    def resolve(self, node: Node) -> Prepared | None:
        """What the node runs now that its deps are done; None when all its units are in the journal."""
        r, a = self.r, self.arms[node.arm_id]
        aid, s = a.arm.arm_id, r.settings
        spec_name = a.spec.name
        if node.kind == "images":
            b = node.args["batch"]
            uid = f"images:{b.key}"
            return None if r._is_done(uid) else Prepared(
                [uid], Job("images", aid, "images", {"uid": uid, "arm_id": aid, "batch": b, "dataset": spec_name,
                                                     "slic": s.slic}), claims=frozenset({uid}))
        if node.kind in ("train", "prune", "control"):
            uid = self.unit_of(node)
            if r._is_done(uid):
                return None
            k = node.args["seed"]
            cfg, common = a.cfgs[k], {"uid": uid, "arm": a.arm, "input_shape": a.input_shape}
            if node.kind == "train":
                job = Job("train", aid, "train", {**common, "position": a.pos, "cfg": cfg, "first": k == 0})
                return Prepared([uid], job, claims=frozenset({uid, f"run:{cfg.run_id()}"}))
            kwargs = {**common, "cfg": cfg, "dense_id": cfg.run_id()}
            if node.kind == "prune":
                return Prepared([uid], Job("prune", aid, "prune", {**kwargs, "sparsity": node.args["level"]}),
                                claims=frozenset({uid}))
            return Prepared([uid], Job("control", aid, "control", {**kwargs, "tag": _tag(a.arm)}),
                            claims=frozenset({uid}))
        dense_id = a.cfgs[node.args["seed"]].run_id() if "seed" in node.args else None
        if node.kind == "targets":
            assert dense_id is not None
            arch = a.cfgs[0].arch
            task_k = tuple((t, s.targets_for(arch, t, aid)) for t in a.cfgs[0].tasks)
            draw = TargetDraw(s.max_targets, s.seed, tuple(x for x in task_k if x[1] != s.max_targets))
            ids = [i for b in a.batches for i in b.image_ids]
            uid = f"targets:{dense_id}:{draw_key(ids, draw)}"
            return None if r._is_done(uid) else Prepared([uid], Job("targets", aid, "targets", {
                "uid": uid, "arm_id": aid, "dense_id": dense_id, "spec_name": spec_name, "settings": s,
                "batches": a.batches, "draw": draw, "expected_sha": self._sha(dense_id)}), claims=frozenset({uid}))
        if node.kind == "explain":
            return self._explain(node, a, dense_id)
        if node.kind == "layer":
            return self._layers(node, a, dense_id)
        if node.kind == "sanity":
            return self._sanity(node, a, dense_id)
        if node.kind == "seed_similarity":
            return self._seed_noise(a)
        raise ValueError(f"unknown node kind {node.kind!r}")

    def _explain(self, node: Node, a: ArmData, dense_id: str | None) -> Prepared | None:
        r, b, aid = self.r, node.args["batch"], a.arm.arm_id
        model_id = self.model_id(node.args["model"])
        uid = f"explain:{model_id}:{b.key}"
        if r._is_done(uid):
            return None
        con, s = r.w.con, r.settings
        ref = dense_id if node.args["ref"] is not None else None
        dense = DenseMaps(ref, dense_maps(con, ref, b, r.done)) if ref is not None else None
        wanted = wanted_targets(con, dense_id, b) if s.limits_targets() and dense_id else None
        which = s.explainers_for(ref is None, node.args["level"])
        return Prepared([uid], Job("explain", aid, "explain", {
            "uid": uid, "arm_id": aid, "model_id": model_id, "spec_name": a.spec.name, "settings": s, "batch": b,
            "sps": stored_superpixels(con, b, r.skey, s.slic), "skey": r.skey, "wanted": wanted, "dense": dense,
            "explainers": which, "expected_sha": self._sha(model_id)}), claims=frozenset({uid}))

    def _layers(self, node: Node, a: ArmData, dense_id: str | None) -> Prepared | None:
        r, b, aid = self.r, node.args["batch"], a.arm.arm_id
        assert dense_id is not None
        model_id = self.model_id(node.args["model"])
        plan = self._dense_plan(a, dense_id)[0]
        uids = {lay: f"layer:{model_id}:{b.key}:{lay}" for lay in plan.ablation_layers}
        uids = {lay: uid for lay, uid in uids.items() if not r._is_done(uid)}
        if not uids:
            return None
        con = r.w.con
        return Prepared(list(uids.values()), Job("layer", aid, "layer", {
            "uids": uids, "arm_id": aid, "model_id": model_id, "spec_name": a.spec.name, "settings": r.settings,
            "batch": b, "sps": stored_superpixels(con, b, r.skey, r.settings.slic), "skey": r.skey,
            "wanted": explained_targets(con, model_id, b), "expected_sha": self._sha(model_id)}),
            claims=frozenset(uids.values()))

    def _sanity(self, node: Node, a: ArmData, dense_id: str | None) -> Prepared | None:
        r, aid, check = self.r, a.arm.arm_id, self.r.preset.sanity
        assert dense_id is not None
        assert check is not None
        plan, tasks, model = self._dense_plan(a, dense_id)
        paths = {t: resolve_layer_name(model, plan.primary[t], t) for t in tasks}
        names = list(r.settings.explainers)
        b = a.batches[0]
        n = min(check.images, len(b.image_ids))
        key = sanity_key(check, names, b.image_ids[:n], paths)
        uid = f"sanity:{dense_id}:{key}"
        return None if r._is_done(uid) else Prepared([uid], Job("sanity", aid, "sanity", {
            "uid": uid, "arm_id": aid, "dense_id": dense_id, "spec_name": a.spec.name, "settings": r.settings,
            "batch": b, "check": check, "names": names, "paths": paths, "key": key, "primary": plan.primary}),
            claims=frozenset({uid}))

    def _seed_noise(self, a: ArmData) -> Prepared | None:
        """Every further seed's dense maps against the first seed's (a driver-side unit: store reads only)."""
        r, aid = self.r, a.arm.arm_id
        ids = [c.run_id() for c in a.cfgs]
        image_ids = [i for b in a.batches for i in b.image_ids]
        todo = [d for d in ids[1:] if not r._is_done(f"seed_similarity:{d}:{ids[0]}")]
        if not todo:
            return None

        def run() -> list[UnitRows]:
            out = []
            for d in todo:
                t = Clock()
                rows = seed_similarity_rows(r.w.con, d, ids[0], image_ids, r.settings.topk)
                out.append(UnitRows(f"seed_similarity:{d}:{ids[0]}", "seed_similarity", {"similarity": rows}, aid,
                                    d, {"reference": ids[0], "images": len(image_ids)}, *t.spent()))
            return out

        uids = [f"seed_similarity:{d}:{ids[0]}" for d in todo]
        return Prepared(uids, local=run, claims=frozenset(uids))

