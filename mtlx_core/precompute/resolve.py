"""The driver side of the planner: a node whose deps are done becomes a :class:`Prepared` (unit ids, the pure
job with the inputs read from the store, claims), or None when its units are all in the journal
(``mtlx_core.precompute.planner``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mtlx_core.explain.target_draw import TargetDraw
from mtlx_core.models.layers import resolve_layer_name
from mtlx_core.precompute.explainer import layer_plan
from mtlx_core.precompute.jobs import Job
from mtlx_core.precompute.nodes import ArmData, Node, Prepared, arm_tag, draw_key, finetune_tag
from mtlx_core.precompute.plan import Clock
from mtlx_core.precompute.reads import dense_maps, explained_targets, stored_superpixels, wanted_targets
from mtlx_core.precompute.sanity_unit import sanity_key
from mtlx_core.precompute.seed_noise import seed_similarity_rows
from mtlx_core.precompute.units import DenseMaps, explain_tasks
from mtlx_core.runs import load_run
from mtlx_core.store.writer import UnitRows

if TYPE_CHECKING:
    from mtlx_core.precompute.runner import Runner


class Resolver:
    """Resolution of the planner's nodes against the runner's store and journal."""

    r: Runner
    arms: dict[str, ArmData]
    nodes: dict[str, Node]
    _plans: dict[str, Any]

    def unit_of(self, node: Node) -> str:
        """The journal id of a model-making node (train, prune, control), known before it runs."""
        a = self.arms[node.arm_id]
        dense_id = a.cfgs[node.args["seed"]].run_id()
        if node.kind == "train":
            return f"train:{a.arm.arm_id}:{dense_id}"
        if node.kind == "prune":
            return f"prune:{dense_id}:{arm_tag(a.arm)}:{node.args['level']:g}:{finetune_tag(a.arm)}"
        return f"control:{dense_id}:{arm_tag(a.arm)}:{finetune_tag(a.arm)}"

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
            return Prepared([uid], Job("control", aid, "control", {**kwargs, "tag": arm_tag(a.arm)}),
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
                "uid": uid, "arm_id": aid, "dense_id": dense_id, "spec_name": spec_name,
                "settings": r.job_settings("targets"), "batches": a.batches, "draw": draw,
                "expected_sha": self._sha(dense_id)}), claims=frozenset({uid}))
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
            "uid": uid, "arm_id": aid, "model_id": model_id, "spec_name": a.spec.name,
            "settings": r.job_settings("explain"), "batch": b,
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
            "uids": uids, "arm_id": aid, "model_id": model_id, "spec_name": a.spec.name,
            "settings": r.job_settings("layer"),
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
            "uid": uid, "arm_id": aid, "dense_id": dense_id, "spec_name": a.spec.name,
            "settings": r.job_settings("sanity"),
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

