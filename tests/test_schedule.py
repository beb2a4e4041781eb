"""The plan's scheduler (list scheduling on N GPUs, packing, critical path) and the unit cost model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from mtlx_core.precompute.costs import DEVICES, CostModel, explain_facts, model_macs, passes
from mtlx_core.precompute.presets import get_study_preset
from mtlx_core.precompute.schedule import (
    PACKING_SHARES,
    PlanNode,
    contention_from,
    critical_path,
    format_plan,
    simulate,
)
from mtlx_core.store.writer import ensure_schema

WHOLE = {"train": 1.0, "explain": 1.0, "images": 0.0}
QUARTER = {"train": 1.0, "explain": 0.25, "images": 0.0}


def node(key: str, kind: str = "train", deps: tuple[str, ...] = (), priority: int = 0, arm: str = "a",
         **info: Any) -> PlanNode:
    return PlanNode(key, kind, arm, deps, priority, info)


def test_chain_wall_is_the_sum_of_costs() -> None:
    nodes = [node("a", priority=0), node("b", deps=("a",), priority=1), node("c", deps=("b",), priority=2)]
    costs = {"a": 2.0, "b": 3.0, "c": 5.0}
    for gpus in (1, 4):
        s = simulate(nodes, costs, gpus, WHOLE)
        assert s.wall == pytest.approx(10.0)
        assert (s.start["b"], s.start["c"]) == pytest.approx((2.0, 5.0))


def test_two_independent_units_on_two_gpus_take_the_longer() -> None:
    s = simulate([node("a"), node("b", priority=1)], {"a": 4.0, "b": 7.0}, 2, WHOLE)
    assert s.wall == pytest.approx(7.0)
    assert s.start == {"a": 0.0, "b": 0.0}
    assert {s.gpu["a"], s.gpu["b"]} == {0, 1}
    assert s.utilisation == pytest.approx(11.0 / 14.0)


def test_lower_priority_ready_unit_waits_when_capacity_is_short() -> None:
    # "z" is listed first but has the higher priority number: "y" runs first, "z" waits for it
    nodes = [node("z", priority=5), node("y", priority=1), node("x", priority=3)]
    s = simulate(nodes, {"z": 1.0, "y": 2.0, "x": 4.0}, 1, WHOLE)
    assert (s.start["y"], s.start["x"], s.start["z"]) == pytest.approx((0.0, 2.0, 6.0))


def test_four_quarter_units_start_together_on_one_gpu_and_a_fifth_waits() -> None:
    nodes = [node(f"e{i}", "explain", priority=i) for i in range(5)]
    costs = {n.key: 3.0 for n in nodes}
    s = simulate(nodes, costs, 1, QUARTER, contention=0.0)
    assert [s.start[f"e{i}"] for i in range(4)] == [0.0] * 4
    assert s.start["e4"] == pytest.approx(3.0)
    assert s.wall == pytest.approx(6.0)
    assert simulate(nodes, costs, 1, WHOLE).wall == pytest.approx(15.0)  # without packing: one at a time


def test_packed_units_slow_down_by_the_contention() -> None:
    nodes = [node(f"e{i}", "explain", priority=i) for i in range(4)]
    s = simulate(nodes, {n.key: 2.0 for n in nodes}, 1, QUARTER, contention=0.1)
    assert s.wall == pytest.approx(2.0 * 1.3)  # 4 units on one GPU: each at 1 / (1 + 0.1 * 3) of its speed
    # a unit alone runs at full speed again once its neighbours finished: 1 s shared by 2, then 1 s of work alone
    two = [node("short", "explain"), node("long", "explain", priority=1)]
    s2 = simulate(two, {"short": 1.0, "long": 2.0}, 1, QUARTER, contention=1.0)
    assert s2.end["short"] == pytest.approx(2.0)
    assert s2.end["long"] == pytest.approx(3.0)
    assert contention_from(2.0, 2.6, 4) == pytest.approx(0.1)


def test_backfill_false_keeps_a_waiting_whole_gpu_unit_first() -> None:
    nodes = [node("q", "explain", priority=0), node("t", "train", priority=1), node("r", "explain", priority=2)]
    costs = {"q": 4.0, "t": 1.0, "r": 1.0}
    filled = simulate(nodes, costs, 1, QUARTER, contention=0.0)
    assert (filled.start["r"], filled.start["t"]) == pytest.approx((0.0, 4.0))  # "r" fills the free 3/4
    strict = simulate(nodes, costs, 1, QUARTER, contention=0.0, backfill=False)
    assert (strict.start["t"], strict.start["r"]) == pytest.approx((4.0, 5.0))  # "r" waits behind "t"


def test_cpu_kinds_use_the_cpu_pool_not_the_gpus() -> None:
    nodes = [node("t", "train"), node("i1", "images", priority=1), node("i2", "images", priority=2)]
    costs = {"t": 10.0, "i1": 3.0, "i2": 3.0}
    s = simulate(nodes, costs, 1, WHOLE)
    assert (s.gpu["i1"], s.gpu["i2"], s.gpu["t"]) == (None, None, 0)
    assert (s.start["i2"], s.wall) == pytest.approx((0.0, 10.0))
    assert s.busy_gpu_seconds == pytest.approx(10.0)
    assert simulate(nodes, costs, 1, WHOLE, cpus=1).start["i2"] == pytest.approx(3.0)


def test_critical_path_of_a_diamond() -> None:
    nodes = [node("a"), node("b", deps=("a",), priority=1), node("c", deps=("a",), priority=2),
             node("d", deps=("b", "c"), priority=3)]
    costs = {"a": 1.0, "b": 5.0, "c": 2.0, "d": 1.0}
    assert critical_path(nodes, costs) == (pytest.approx(7.0), ["a", "b", "d"])
    assert simulate(nodes, costs, 2, WHOLE).wall == pytest.approx(7.0)


@pytest.mark.parametrize(("nodes", "shares", "gpus", "match"), [
    ([node("a", deps=("b",)), node("b", deps=("a",))], WHOLE, 1, "dependency cycle among a, b"),
    ([node("a", deps=("nope",))], WHOLE, 1, "unknown node.*'nope'"),
    ([node("a", "explain")], {"explain": 1.5}, 1, r"share of kind 'explain' must be in \(0, 1\]"),
    ([node("a", "explain")], {"explain": -0.25}, 1, r"share of kind 'explain' must be in \(0, 1\]"),
    ([node("a")], WHOLE, 0, "gpus must be at least 1"),
    ([node("a"), node("a")], WHOLE, 1, "duplicate plan node key 'a'"),
])
def test_bad_plans_are_refused(nodes: list[PlanNode], shares: dict[str, float], gpus: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        simulate(nodes, {n.key: 1.0 for n in nodes}, gpus, shares)


def test_missing_cost_is_refused() -> None:
    with pytest.raises(ValueError, match="no cost for plan node 'b'"):
        critical_path([node("a"), node("b")], {"a": 1.0})


def test_format_plan_reports_kinds_path_and_both_packings() -> None:
    nodes = [node("t", "train"), *(node(f"e{i}", "explain", deps=("t",), priority=i + 1) for i in range(4))]
    costs = {"t": 100.0, **{f"e{i}": 40.0 for i in range(4)}}
    text = format_plan(nodes, costs, (1, 2), PACKING_SHARES, contention=0.0)
    assert "plan: 5 units" in text
    assert "critical path: 2 min 20 s over 2 units: t -> e0" in text
    rows = {(r.split()[0], r.split()[1]): r.split()[2:] for r in text.splitlines() if r.split()[:2] in
            (["1", "no"], ["2", "no"], ["1", "yes"], ["2", "yes"])}
    assert rows[("1", "no")][:4] == ["4", "min", "20", "s"]  # 100 + 4 x 40 s
    assert rows[("2", "no")][:4] == ["3", "min", "00", "s"]  # 100 + 2 x 40 s
    assert rows[("1", "yes")][:4] == ["2", "min", "20", "s"]  # the 4 explain units packed on one GPU


def test_cost_model_from_store_means_per_arm_and_kind(tmp_path: Path) -> None:
    path = tmp_path / "study.duckdb"
    con = duckdb.connect(str(path))
    ensure_schema(con)
    for uid, kind, arm, sec in (("u1", "explain", "A", 2.0), ("u2", "explain", "A", 4.0), ("u3", "explain", "B", 9.0),
                                ("u4", "train", "A", 100.0)):
        con.execute("INSERT INTO units (unit_id, kind, arm_id, model_id, detail, seconds, cpu_seconds) "
                    "VALUES (?, ?, ?, 'm', '{}', ?, ?)", [uid, kind, arm, sec, sec])
    con.close()
    model = CostModel.from_store(path)
    assert model.measured == {("explain", "A"): 3.0, ("explain", "B"): 9.0, ("train", "A"): 100.0}
    assert model.per_kind == {"explain": 5.0, "train": 100.0}
    nodes = [node("x", "explain", arm="A"), node("y", "explain", arm="C"), node("z", "train", arm="B")]
    assert model.costs(nodes) == {"x": 3.0, "y": 5.0, "z": 100.0}
    assert [model.source(n) for n in nodes] == ["measured", "kind mean", "kind mean"]


TINY = {"arch": "segnet_mtan", "dataset": "synth", "tasks": ["segmentation", "depth"], "width": 0.0625,
        "batch_size": 2}


def test_estimate_grows_with_iterations_and_input_size() -> None:
    model = CostModel(device="cpu")
    short = node("s", **TINY, iterations=10, input_shape=[3, 32, 64])
    long = node("l", **TINY, iterations=20, input_shape=[3, 32, 64])
    big = node("b", **TINY, iterations=10, input_shape=[3, 64, 128])
    assert passes(long) == 2 * passes(short) == 2 * 10 * 2 * 3
    overhead = DEVICES["cpu"].train_overhead_s
    assert model.estimate(long) - overhead == pytest.approx(2 * (model.estimate(short) - overhead))
    assert model.estimate(big) > model.estimate(short)
    ratio = model_macs("segnet_mtan", "synth", TINY["tasks"], [3, 64, 128], 0.0625) / model_macs(
        "segnet_mtan", "synth", TINY["tasks"], [3, 32, 64], 0.0625)
    assert ratio == pytest.approx(4.0, rel=0.05)  # convolutions scale with the pixels


def test_explain_estimate_counts_targets_explainers_and_curves() -> None:
    base = {**TINY, "input_shape": [3, 32, 64], "images": 4, "metrics": ["irof"], "curves": [[50, 2, 1]]}
    one = node("e1", "explain", **base, explainers=["gradcam"], targets_per_image=1)
    three = node("e3", "explain", **base, explainers=["gradcam", "gradcampp", "hirescam"], targets_per_image=1)
    # per image: 1 forward + T x E x 2 backward-equivalents + 50 steps x (T x E x 2 ranked + 1 random); T = 2 tasks
    assert passes(one) == 4 * (1 + 2 * 2 + 50 * (2 * 2 + 1))
    assert passes(three) == 4 * (1 + 2 * 2 * 3 + 50 * (2 * 3 * 2 + 1))
    with pytest.raises(ValueError, match="lacks info 'images'"):
        CostModel().estimate(node("x", "explain", **TINY, input_shape=[3, 32, 64]))
    with pytest.raises(ValueError, match="unknown device class 'tpu'; valid: cpu, gpu"):
        CostModel(device="tpu")


def test_explain_facts_of_the_demo_and_smoke_presets() -> None:
    demo = explain_facts(get_study_preset("demo").explain)
    # IROF: 50 segments, MoRF and 1 random; Deletion: 8 steps, MoRF + LeRF (AbPC's) and 1 random; Insertion: 8
    # steps, MoRF and 1 random
    assert demo == {"curves": [[50, 1, 1], [8, 2, 1], [8, 1, 1]], "segments": 50}
    smoke = explain_facts(get_study_preset("smoke").explain)
    assert smoke["curves"].count([16, 2, 2]) == 2  # IROF once per fill mode (quantus, fixed)
