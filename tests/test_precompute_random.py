"""The shared random baseline equals ``irof``'s random curves; the pruned models' target policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _explain_models import TinyMTL, photos, tasks_for

from mtlx_core.explain.fastforward import FastForward, ForwardSettings
from mtlx_core.explain.gradcam import explain
from mtlx_core.explain.irof import IrofSettings, irof
from mtlx_core.explain.superpixels import SlicSettings, compute_superpixels
from mtlx_core.precompute.presets import ExplainSettings
from mtlx_core.precompute.shared_random import SharedRandom
from mtlx_core.precompute.units import ModelExplainer


@pytest.fixture(scope="module")
def setup() -> tuple:
    torch.manual_seed(0)
    model = TinyMTL(n_classes=5)
    tasks = tasks_for(5)
    images = torch.stack(photos((24, 32))[:2])
    sps = [compute_superpixels(img, SlicSettings(n_segments=12)) for img in images]
    exps = [e for t in tasks.values() for e in explain(model, images, t)]
    return model, tasks, images, sps, exps


@pytest.mark.parametrize("fill_mode", ["quantus", "fixed"])
def test_shared_random_curves_equal_irof_random_curves(setup: tuple, fill_mode: str) -> None:
    model, tasks, images, sps, exps = setup
    fwd = ForwardSettings(trim_tasks=False, fold_bn=False, channels_last=False)
    st = IrofSettings(fill_mode=fill_mode, baselines=("random",), seed=3, forward=fwd)
    ref = [r for r in irof(model, images, exps, sps, tasks, st, forward=FastForward(model, fwd))
           if r.ordering == "random"]
    got = SharedRandom(model, tasks, st)(images, exps, sps)
    assert len(got) == len(ref) == len(exps)
    assert {r.task for r in got} == set(tasks)  # one forward served every task
    for a, b in zip(got, ref, strict=True):
        assert (a.image_index, a.task, a.target_id, a.status, a.seed) == (b.image_index, b.task, b.target_id,
                                                                          b.status, b.seed)
        np.testing.assert_allclose(a.curve, b.curve, rtol=0, atol=1e-5)
        assert a.aoc == pytest.approx(b.aoc, abs=1e-4)


def test_pruned_models_explain_the_dense_models_targets(setup: tuple) -> None:
    model, tasks, images, _, _ = setup

    class Run:  # the part of LoadedRun the explainer uses
        pass

    run = Run()
    run.model = model  # type: ignore[attr-defined]
    ex = ModelExplainer(run, tasks, ExplainSettings(max_targets=1, trim_tasks=False), "cpu")  # type: ignore[arg-type]
    with torch.inference_mode():
        out = model(images)
    dense = ex.targets(out, None)
    for name, per_image in dense.items():  # the largest pixel set of every image and task
        for i, chosen in enumerate(per_image):
            everything = tasks[name].explanation_targets(out[name][i])
            largest = max(everything, key=lambda t: (t.n_pixels, -t.target_id))
            assert [t.target_id for t in chosen] == [largest.target_id]
    wanted = {(0, "segmentation"): {dense["segmentation"][0][0].target_id}, (1, "depth"): {99}}
    pruned = ex.targets(out, wanted)
    assert [t.target_id for t in pruned["segmentation"][0]] == [dense["segmentation"][0][0].target_id]
    assert pruned["depth"][1] == []
    assert pruned["normals"] == [[], []]
