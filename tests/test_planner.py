"""The planner's rules as pure tests (no data read, nothing trained): dependency edges, priority order, claims,
failures and duplicate deliveries (issue 22)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from mtlx_core.precompute.executors import Backend, UnitsFailedError, execute
from mtlx_core.precompute.jobs import Job
from mtlx_core.precompute.nodes import Node, Prepared
from mtlx_core.precompute.plan_mode import plan_nodes
from mtlx_core.precompute.presets import get_study_preset
from mtlx_core.precompute.schedule import PlanNode
from mtlx_core.store.writer import UnitRows


@pytest.fixture(scope="module")
def paper() -> dict[str, PlanNode]:
    return {n.key: n for n in plan_nodes(get_study_preset("paper"), images=8)}


@pytest.fixture(scope="module")
def demo() -> list[PlanNode]:
    return plan_nodes(get_study_preset("demo"), images=8)


def test_static_disparse_prunes_do_not_wait_for_dense_training(paper: dict[str, PlanNode]) -> None:
    prunes = [n for n in paper.values() if n.kind == "prune" and n.arm_id == "nyuv2_deeplab_disparse"]
    assert prunes
    assert all(n.deps == () for n in prunes)
    netslim = [n for n in paper.values() if n.kind == "prune" and n.arm_id.startswith("cityscapes_segnet")]
    assert all(n.deps == (f"train|{n.arm_id}|0",) for n in netslim)


def test_hrank_rounds_chain_each_level_on_the_previous_one(paper: dict[str, PlanNode]) -> None:
    levels = sorted(float(n.key.split("|")[3]) for n in paper.values()
                    if n.kind == "prune" and n.arm_id == "nyuv2_segnet_mtan_hrank")
    for low, high in itertools.pairwise(levels):
        assert f"prune|nyuv2_segnet_mtan_hrank|0|{low:g}" in paper[f"prune|nyuv2_segnet_mtan_hrank|0|{high:g}"].deps


def test_a_pruned_explanation_waits_for_the_dense_maps_of_its_batch(demo: list[PlanNode]) -> None:
    nodes = {n.key: n for n in demo}
    pruned = [n for n in demo if n.kind == "explain" and "|dense|" not in n.key and "|control|" not in n.key]
    assert pruned
    for n in pruned:
        arm, seed, level, batch = n.key.split("|")[1:]
        assert f"explain|{arm}|{seed}|dense|{batch}" in n.deps
        assert f"prune|{arm}|{seed}|{level}" in n.deps
        assert f"targets|{arm}|{seed}" in n.deps
        assert f"images|{arm}|{batch}" in n.deps
        assert all(d in nodes for d in n.deps)


def test_priority_is_the_sequential_order_deps_first_and_arm_by_arm(demo: list[PlanNode]) -> None:
    pos = {n.key: n.priority for n in demo}
    assert sorted(pos.values()) == list(range(len(demo)))
    assert all(pos[d] < n.priority for n in demo for d in n.deps)
    primary = [n for n in demo if n.kind not in ("control", "layer") and "|control|" not in n.key]
    arms = [a.arm_id for a in get_study_preset("demo").arms]
    assert [n.arm_id for n in primary] == sorted((n.arm_id for n in primary), key=arms.index)
    first_control = min(n.priority for n in demo if n.kind == "control")
    assert all(n.priority < first_control for n in primary)
    assert min(n.priority for n in demo if n.kind == "layer") > max(n.priority for n in demo
                                                                   if n.kind == "control")


class FakeBackend(Backend):
    """Runs up to ``slots`` jobs 'at once'; finishes them oldest first, one per poll; ``fail`` raises; ``twice``
    delivers a job's rows twice."""

    def __init__(self, slots: int, fail: set[str] = frozenset(), twice: set[str] = frozenset()) -> None:
        self.slots, self.fail, self.twice = slots, fail, twice
        self.running: list[tuple[str, Job]] = []
        self.started: list[str] = []
        self.overlaps: list[set[str]] = []

    def fits(self, kind: str) -> bool:
        return len(self.running) < self.slots

    def submit(self, node: Node, job: Job) -> None:
        self.running.append((node.key, job))
        self.started.append(node.key)
        self.overlaps.append({k for k, _ in self.running})

    def poll(self) -> list[tuple[str, list[UnitRows] | None, str | None]]:
        key, job = self.running.pop(0)
        if key in self.fail:
            return [(key, None, f"Traceback: {key} raised")]
        rows = [UnitRows(job.kwargs["uid"], job.kind)] * (2 if key in self.twice else 1)
        return [(key, rows, None)]

    def close(self) -> None:
        self.running.clear()


def _graph() -> tuple[list[Node], dict[str, Prepared]]:
    nodes = [Node("a", "train", "x", "primary", ()), Node("b", "explain", "x", "primary", ("a",)),
             Node("c", "explain", "x", "primary", ("a",)), Node("d", "prune", "x", "primary", ("b",)),
             Node("e", "images", "x", "primary", ())]
    for i, n in enumerate(nodes):
        n.priority = i
    claims = {"a": {"a"}, "b": {"run:same"}, "c": {"run:same"}, "d": {"d"}, "e": {"e"}}
    prep = {n.key: Prepared([n.key], Job(n.kind, "x", n.kind, {"uid": n.key}), claims=frozenset(claims[n.key]))
            for n in nodes}
    return nodes, prep


def test_execute_runs_ready_nodes_in_priority_order_never_two_holding_one_claim() -> None:
    nodes, prep = _graph()
    backend, committed, finished = FakeBackend(slots=3), [], []
    execute(nodes, lambda n: prep[n.key], backend, lambda u: committed.append(u.unit_id),
            lambda n: finished.append(n.key), raise_first=False)
    assert backend.started[:2] == ["a", "e"]  # b and c wait for a; e is ready at once
    assert not any({"b", "c"} <= s for s in backend.overlaps)  # b and c claim the same run folder
    assert sorted(committed) == sorted(finished) == ["a", "b", "c", "d", "e"]


def test_a_failed_node_skips_its_dependents_and_the_rest_finishes() -> None:
    nodes, prep = _graph()
    committed: list[str] = []
    with pytest.raises(UnitsFailedError) as err:
        execute(nodes, lambda n: prep[n.key], FakeBackend(slots=2, fail={"b"}), lambda u: committed.append(u.unit_id),
                lambda n: None, raise_first=False)
    assert list(err.value.failed) == ["b"]
    assert err.value.skipped == ["d"]
    assert "b raised" in err.value.failed["b"]
    assert sorted(committed) == ["a", "c", "e"]


def test_a_duplicate_delivery_is_dropped_by_the_runner(tmp_path: Path) -> None:
    from mtlx_core.precompute.runner import Runner
    from mtlx_core.store.writer import StoreWriter

    r = Runner(get_study_preset("smoke"), tmp_path / "s.duckdb", tmp_path / "m", device="cpu", progress=False)
    r.w, r.done, r.last_publish, r.publish_every_s = StoreWriter.open(r.store), {}, 0.0, 1e9
    try:
        nodes, prep = _graph()
        execute(nodes, lambda n: prep[n.key], FakeBackend(slots=1, twice={"a"}), r._commit, lambda n: None,
                raise_first=False)
        assert sorted(u for (u,) in r.w.con.execute("SELECT unit_id FROM units").fetchall()) == list("abcde")
        assert r.result.executed["train"] == 1
    finally:
        r.w.close()


def test_static_disparse_plans_its_finetuning_from_the_given_config_before_the_parent_exists(tmp_path: Path) -> None:
    from mtlx_core.prune.pipeline import finetune_plan
    from mtlx_core.prune.registry import get_method
    from mtlx_core.runs import RunError
    from mtlx_core.train import resolve_config

    cfg = resolve_config("demo_deeplab", data_root=str(tmp_path / "synth"))
    parent = cfg.run_id()
    got, variant, _, ft = finetune_plan(get_method("disparse"), parent, "static", None, None, tmp_path / "models",
                                        None, "cpu", given=cfg)
    assert got == cfg
    assert variant == "static"
    assert ft.iterations == cfg.iterations  # static DiSparse retrains the dense recipe
    with pytest.raises(RunError):  # a method that reads the parent's weights still needs the trained parent
        finetune_plan(get_method("disparse"), parent, "magnitude", None, None, tmp_path / "models", None, "cpu",
                      given=cfg)


def test_an_explain_units_gpu_share_sets_its_memory_budget_share_not_the_settings_key(tmp_path: Path) -> None:
    from mtlx_core.precompute.executors import ExecutorSettings
    from mtlx_core.precompute.runner import Runner

    r = Runner(get_study_preset("smoke"), tmp_path / "s.duckdb", tmp_path / "m", progress=False,
               executor=ExecutorSettings("ray", gpus={"explain": 0.25, "train": 1.0}))
    assert r.job_settings("explain").gpu_share == 0.25
    assert r.job_settings("explain").key() == r.settings.key()
    assert r.job_settings("layer") is r.settings  # no share given for layer units: the whole GPU


class RoomBackend(FakeBackend):
    """A FakeBackend whose jobs take ``job.kwargs['room']`` slots (``ProcessBackend``'s rule for a training job
    with fixed threads)."""

    def fits_job(self, kind: str, job: Job) -> bool:
        return sum(j.kwargs.get("room", 1) for _, j in self.running) + job.kwargs.get("room", 1) <= self.slots


def test_a_job_needing_every_worker_waits_for_them_and_later_jobs_do_not_starve_it() -> None:
    nodes = [Node(k, kind, "x", "primary", (), priority=i)
             for i, (k, kind) in enumerate([("a", "explain"), ("b", "train"), ("c", "explain"), ("d", "explain")])]
    prep = {n.key: Prepared([n.key], Job(n.kind, "x", n.kind, {"uid": n.key, "room": 2 if n.key == "b" else 1}))
            for n in nodes}
    backend = RoomBackend(slots=2)
    execute(nodes, lambda n: prep[n.key], backend, lambda u: None, lambda n: None, raise_first=False)
    assert backend.started == ["a", "b", "c", "d"]
    assert {"b"} in backend.overlaps  # b ran alone, on both workers
    assert not any("b" in s and len(s) > 1 for s in backend.overlaps)


def test_process_workers_give_a_training_job_with_fixed_threads_that_many_workers(tmp_path: Path) -> None:
    import dataclasses

    from mtlx_core.precompute.executors import ProcessBackend
    from mtlx_core.precompute.jobs import Env, job_threads
    from mtlx_core.train.config import PRESETS

    famo, deeplab = PRESETS["demo_segnet_mtan_famo"], PRESETS["demo_deeplab"]
    train2 = Job("train", "x", "train", {"cfg": famo})
    prune1 = Job("prune", "x", "prune", {"cfg": deeplab})
    free = Job("train", "x", "train", {"cfg": dataclasses.replace(famo, threads=None)})
    explain = Job("explain", "x", "explain", {"cfg": famo})
    assert [job_threads(j) for j in (train2, prune1, free, explain)] == [2, 1, None, None]
    backend = ProcessBackend(Env(tmp_path), workers=2)  # the pool starts no process before a submit
    try:
        assert [backend.room(j) for j in (train2, prune1, free, explain)] == [2, 1, 1, 1]
        assert backend.fits_job("train", train2)
        backend.slots["busy"] = 1
        assert not backend.fits_job("train", train2)
        assert backend.fits_job("explain", explain)
    finally:
        backend.close()
    one = ProcessBackend(Env(tmp_path), workers=1)
    assert one.room(train2) == 1  # never more than every worker
    one.close()
