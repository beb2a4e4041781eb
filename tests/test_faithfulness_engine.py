"""The perturbation engine: batch independence (D18), statuses, common random numbers, forwards saved."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _explain_models import TinyMTL, photos, single_thread, tasks_for  # noqa: F401

from mtlx_core.explain.gradcam import explain
from mtlx_core.explain.superpixels import SlicSettings, compute_superpixels
from mtlx_core.faithfulness import FamilySettings, build_metrics, evaluate
from mtlx_core.faithfulness.engine import Engine, perturbed_image
from mtlx_core.faithfulness.metric import ImageContext, random_map
from mtlx_core.models import build_model, task_channels
from mtlx_core.precompute.explainer import ModelExplainer
from mtlx_core.precompute.presets import ExplainSettings
from mtlx_core.precompute.units import Batch

SIZE = (32, 64)


def near_tied(arch: str) -> torch.nn.Module:
    """A small model of the study's architecture whose task outputs nearly tie: the heads' last layers are
    scaled down, so segmentation probabilities differ in the 4th decimal and any rounding that depends on the
    batch would show up in the scores."""
    torch.manual_seed(0)
    model = build_model(arch, task_channels(tasks_for()), width=0.0625).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "heads" in name and (name.endswith(".weight") or name.endswith(".bias")):
                p.mul_(1e-3)
    return model


class _Run:
    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model


@pytest.mark.parametrize(("arch", "rounding"), [("segnet_mtan", "exact"), ("deeplab_resnet34", "exact"),
                                               ("segnet_mtan", "tie_safe"), ("deeplab_resnet34", "tie_safe"),
                                               ("segnet_mtan", "index_safe")])
def test_every_map_and_score_of_an_image_is_the_same_alone_or_in_a_batch(arch: str, rounding: str) -> None:
    model = near_tied(arch)
    images = torch.stack(photos(SIZE)[:3])
    settings = ExplainSettings(n_random=2, slic=SlicSettings(n_segments=12), metrics=("irof", "deletion", "insertion",
                               "abpc", "rma"), metric_options=(("deletion", (("n_steps", 6),)),
                                                               ("insertion", (("n_steps", 6),))), rounding=rounding)
    ex = ModelExplainer(_Run(model), tasks_for(), settings, "cpu")  # type: ignore[arg-type]
    sps = [compute_superpixels(img, settings.slic) for img in images]
    together = ex.run_batch("m", Batch("b3", [0, 1, 2], ["a", "b", "c"], images), sps, "k", None, None)
    alone = ex.run_batch("m", Batch("b1", [2], ["c"], images[2:]), sps[2:], "k", None, None)
    mine = {k: [r for r in rows if r.get("image_id") == "c"] for k, rows in together.items()}
    assert len(mine["faithfulness"]) == len(alone["faithfulness"]) > 50
    for table in ("predictions", "explanations", "faithfulness"):
        key = ("task", "target_id", "metric", "variant", "ordering", "replicate", "explainer")
        a = sorted(mine[table], key=lambda r: tuple(str(r.get(k)) for k in key))
        b = sorted(alone[table], key=lambda r: tuple(str(r.get(k)) for k in key))
        assert a == b, table  # bit-identical: maps (PNG/npy bytes), curves and scores


def test_random_orderings_are_common_to_every_target_and_forwarded_once() -> None:
    model, tasks = TinyMTL(), tasks_for()
    image = torch.stack(photos(SIZE)[:1])
    sp = [compute_superpixels(image[0], SlicSettings(n_segments=10))]
    exps = [e for t in tasks.values() for e in explain(model, image, t)]
    engine = Engine(model, tasks)
    family = FamilySettings(orderings=("random",), n_random=3, seed=5)
    res = evaluate(model, image, exps, tasks, build_metrics("irof"), family, sp, engine)
    assert {(r.replicate, r.seed) for r in res} == {(0, 5), (1, 6), (2, 7)}
    assert len(res) == 3 * len({(e.task, e.target_id) for e in exps})
    # each replicate's perturbed images serve every target of every task: as many forwards as for one target
    # (at most 3 orderings x n_segments; fewer where two orderings share their first segments)
    one = Engine(model, tasks)
    evaluate(model, image, exps[:1], tasks, build_metrics("irof"), family, sp, one)
    assert len(exps) > 3
    assert engine.stats.rows == one.stats.rows <= 3 * sp[0].n_segments


def test_single_segment_and_zero_maps_have_statuses_and_no_scores() -> None:
    model, tasks = TinyMTL(), tasks_for()
    noise = torch.from_numpy(np.random.default_rng(0).random((3, 64, 64)).astype(np.float32))[None]
    sp = compute_superpixels(noise[0])
    assert sp.n_segments == 1
    exps = [e for e in explain(model, noise, tasks["depth"]) if not e.is_zero][:1]
    res = evaluate(model, noise, exps, tasks, build_metrics("irof,deletion,rma"), FamilySettings(n_random=1), [sp])
    by = {(r.metric, r.ordering): r for r in res}
    assert by[("irof", "morf")].status == by[("irof", "random")].status == "single_segment"
    assert by[("deletion", "morf")].status == "ok"  # pixels, not segments
    assert all((r.status == "ok") == (r.score is not None) for r in res)


def test_perturbed_image_is_what_the_engine_forwarded() -> None:
    """The app's one-image view rebuilds exactly the engine's images (deletion: step k removes k groups)."""
    image = photos(SIZE)[0] * 0.5 + 0.25  # no black pixel before any step
    ctx = ImageContext(0, image.numpy(), None)
    [deletion] = build_metrics("deletion", {"deletion": {"n_steps": 4, "fill": "black"}})
    plan = deletion.plan(ctx, random_map(0, SIZE), False, None)
    x = [perturbed_image(image, plan, k) for k in range(5)]
    share = [float((xi == 0).all(0).float().mean()) for xi in x]
    assert share == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0], abs=1e-3)
    assert torch.equal(x[0], image)
