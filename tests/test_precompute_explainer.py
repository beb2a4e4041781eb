"""The precompute explainer's target policy: every target of the dense model, the drawn ones for pruned models."""

from __future__ import annotations

import pytest
import torch
from _explain_models import TinyMTL, photos, tasks_for

from mtlx_core.explain.gradcam import explain
from mtlx_core.explain.superpixels import SlicSettings, compute_superpixels
from mtlx_core.precompute.explainer import ModelExplainer
from mtlx_core.precompute.presets import ExplainSettings


@pytest.fixture(scope="module")
def setup() -> tuple:
    torch.manual_seed(0)
    model = TinyMTL(n_classes=5)
    tasks = tasks_for(5)
    images = torch.stack(photos((24, 32))[:2])
    sps = [compute_superpixels(img, SlicSettings(n_segments=12)) for img in images]
    exps = [e for t in tasks.values() for e in explain(model, images, t)]
    return model, tasks, images, sps, exps


def test_models_explain_every_target_or_only_the_wanted_ones(setup: tuple) -> None:
    model, tasks, images, _, _ = setup

    class Run:  # the part of LoadedRun the explainer uses
        pass

    run = Run()
    run.model = model  # type: ignore[attr-defined]
    ex = ModelExplainer(run, tasks, ExplainSettings(max_targets=1, trim_tasks=False), "cpu")  # type: ignore[arg-type]
    with torch.inference_mode():
        out = model(images)
    dense = ex.targets(out, None)
    for name, per_image in dense.items():  # no wanted ids: every target of the clean prediction
        for i, chosen in enumerate(per_image):
            everything = tasks[name].explanation_targets(out[name][i])
            assert [t.target_id for t in chosen] == [t.target_id for t in everything]
    first = dense["segmentation"][0][0].target_id
    wanted = {(0, "segmentation"): {first}, (1, "depth"): {99}}
    pruned = ex.targets(out, wanted)  # the dense model's drawn ids (target_draws): only those
    assert [t.target_id for t in pruned["segmentation"][0]] == [first]
    assert pruned["depth"][1] == []
    assert pruned["normals"] == [[], []]


def test_draw_rows_record_every_candidate_and_draw_one_per_image_and_task(setup: tuple) -> None:
    from mtlx_core.explain.target_draw import TargetDraw, draw_targets
    from mtlx_core.precompute.units import Batch

    model, tasks, images, _, _ = setup

    class Run:
        pass

    run = Run()
    run.model = model  # type: ignore[attr-defined]
    ex = ModelExplainer(run, tasks, ExplainSettings(max_targets=1, trim_tasks=False), "cpu")  # type: ignore[arg-type]
    batches = [Batch("b0", [0], ["img0"], images[:1]), Batch("b1", [1], ["img1"], images[1:])]
    rows = ex.draw_rows("m", batches, TargetDraw(1, 7))
    with torch.inference_mode():
        out = model(images)
    for name, task in tasks.items():
        cands = [task.explanation_targets(out[name][i]) for i in range(2)]
        expected = draw_targets(cands, 1, 7, ["img0", "img1"], name)
        for i, iid in enumerate(["img0", "img1"]):
            mine = [r for r in rows if r["task"] == name and r["image_id"] == iid]
            assert sorted(r["target_id"] for r in mine) == sorted(t.target_id for t in cands[i])
            assert [r["target_id"] for r in mine if r["drawn"]] == [t.target_id for t in expected[i]]
            assert all((r["rule"], r["k"], r["seed"], r["position"]) == ("stratified_random", 1, 7, i) for r in mine)
