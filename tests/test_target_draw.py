"""The seeded, stratified, region-size-blind target draw and the seeded image sample (issue 16, D26)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from mtlx_core.explain.target_draw import TargetDraw, draw_targets, sample_images


@dataclass(frozen=True)
class T:
    target_id: int
    n_pixels: int = 1


def ids(draw: list[list[T]]) -> list[list[int]]:
    return [[t.target_id for t in per] for per in draw]


KEYS = [f"img{i}" for i in range(8)]


def test_the_draw_is_seeded() -> None:
    cands = [[T(c) for c in range(6)] for _ in KEYS]
    a = ids(draw_targets(cands, 2, 0, KEYS, "segmentation"))
    assert a == ids(draw_targets(cands, 2, 0, KEYS, "segmentation"))
    assert a != ids(draw_targets(cands, 2, 1, KEYS, "segmentation"))
    assert a != ids(draw_targets(cands, 2, 0, KEYS, "depth"))  # one coin per image AND task


def test_the_draw_is_stratified_every_target_appears_before_any_repeats() -> None:
    cands = [[T(c) for c in range(4)] for _ in KEYS]  # every image has targets 0-3
    drawn = ids(draw_targets(cands, 1, 0, KEYS, "normals"))
    assert sorted(d[0] for d in drawn[:4]) == [0, 1, 2, 3]  # the first four images cover all four
    assert sorted(d[0] for d in drawn[4:]) == [0, 1, 2, 3]  # and the next four again
    assert Counter(d[0] for d in drawn) == {0: 2, 1: 2, 2: 2, 3: 2}


def test_a_rare_target_is_drawn_where_it_appears() -> None:
    cands = [[T(0), T(1)]] * 5 + [[T(0), T(1), T(7)]]  # class 7 only in the last image
    drawn = ids(draw_targets(cands, 1, 0, KEYS[:6], "segmentation"))
    assert drawn[-1] == [7]


def test_the_draw_ignores_region_size() -> None:
    small = [[T(c, n_pixels=1 + c) for c in range(5)] for _ in KEYS]
    large = [[T(c, n_pixels=10_000 - 100 * c) for c in range(5)] for _ in KEYS]
    assert ids(draw_targets(small, 2, 3, KEYS, "depth")) == ids(draw_targets(large, 2, 3, KEYS, "depth"))


def test_a_larger_sample_keeps_the_earlier_draws() -> None:
    cands = [[T(c) for c in range(5)] for _ in KEYS]
    assert ids(draw_targets(cands[:3], 2, 0, KEYS[:3], "depth")) == ids(draw_targets(cands, 2, 0, KEYS, "depth"))[:3]


def test_all_targets_when_k_is_none_or_the_image_has_few() -> None:
    cands = [[T(3), T(1)], [T(2)]]
    assert ids(draw_targets(cands, None, 0, KEYS[:2], "depth")) == [[1, 3], [2]]
    assert ids(draw_targets(cands, 2, 0, KEYS[:2], "depth")) == [[1, 3], [2]]


def test_bad_draw_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        draw_targets([[T(0)]], 0, 0, ["a"], "depth")
    with pytest.raises(ValueError, match="image keys"):
        draw_targets([[T(0)]], 1, 0, ["a", "b"], "depth")
    with pytest.raises(ValueError, match="duplicate"):
        draw_targets([[T(0), T(0)]], 1, 0, ["a"], "depth")


def test_the_image_sample_is_seeded_without_replacement_and_prefix_stable() -> None:
    a = sample_images(128, 32, seed=0)
    assert len(set(a)) == 32
    assert all(0 <= i < 128 for i in a)
    assert a == sample_images(128, 32, seed=0)
    assert a != sample_images(128, 32, seed=1)
    assert a != list(range(32))  # never the first N (D26)
    assert sample_images(128, 40, seed=0)[:32] == a
    assert sorted(sample_images(10, 99, seed=0)) == list(range(10))
    assert sample_images(128, 5, rule="first") == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="valid rules"):
        sample_images(10, 5, rule="largest")


def test_a_scoped_target_limit_overrides_max_targets_for_its_arm_and_task_only() -> None:
    from mtlx_core.precompute.presets import ExplainSettings, get_study_preset

    s = ExplainSettings(max_targets=1, target_limits=(("arm_a:segmentation", 2), ("segnet_mtan", None)))
    assert s.targets_for("deeplab_resnet34", "segmentation", "arm_a") == 2
    assert s.targets_for("deeplab_resnet34", "depth", "arm_a") == 1
    assert s.targets_for("deeplab_resnet34", "segmentation", "arm_b") == 1
    assert s.targets_for("segnet_mtan", "depth", "arm_b") is None
    # unused, the field leaves the settings key as it was before it existed
    assert "target_limits" not in ExplainSettings(max_targets=1).key_fields()
    assert ExplainSettings(max_targets=1).key() != ExplainSettings(max_targets=1, target_limits=(("x", 2),)).key()
    demo = get_study_preset("demo").explain
    assert demo.targets_for("segnet_mtan", "segmentation", "demo_segnet_mtan_famo_netslim") == 2
    assert demo.targets_for("segnet_mtan", "segmentation", "demo_segnet_mtan_hrank") == 1


def test_a_per_task_k_draws_that_many_for_that_task_and_records_it() -> None:
    draw = TargetDraw(1, 0, (("segmentation", 2),))
    assert (draw.k_for("segmentation"), draw.k_for("depth")) == (2, 1)
    assert draw.to_dict() == {"rule": "stratified_random", "k": 1, "seed": 0, "task_k": [["segmentation", 2]]}
    assert TargetDraw(None, 0, (("depth", 1),)).rule_for("segmentation") == "all"
    assert TargetDraw(None, 0).to_dict() == {"rule": "all", "k": None, "seed": 0}
