"""The faithfulness family agrees with the reference implementations (decision D28, issue 17).

Each metric is computed by ``evaluate`` (the engine, default ``ForwardSettings``: batched, task-trimmed forwards
with batch-1 numerics) and by its reference (``mtlx_core.faithfulness.reference``: Quantus 0.6.0,
pytorch-grad-cam 1.5.7, RISE's loop), one image and target at a time, through
``mtlx_core.faithfulness.crosscheck`` (the reference's ``f`` is the task scalar over the engine's clean value,
so both work on the same normalised footing). Every target of every task, most relevant first, reversed and
random orderings; scores and curves within 1e-4 (they agree bit for bit in practice). Fast tests use one image
and one target per task; the exhaustive ones are marked slow.

The known-answer test: a model whose outputs depend on one region only; the region's map beats random, which
beats reversed, under every curve metric of the registry (``score_norm``, every target of every task).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from _explain_models import RegionModel, TinyMTL, photos, real_images, red_square_image, single_thread, tasks_for  # noqa: F401

from mtlx_core.explain.gradcam import explain
from mtlx_core.explain.superpixels import compute_superpixels
from mtlx_core.faithfulness import Engine, FamilySettings, build_metrics, evaluate
from mtlx_core.faithfulness.crosscheck import reference_check, scalar_fn
from mtlx_core.faithfulness.metric import random_map
from mtlx_core.faithfulness.registry import METRICS
from mtlx_core.tasks.base import ExplanationTarget

pytest.importorskip("quantus", reason="quantus (the reference of IROF and its siblings) cannot be imported")
pytest.importorskip("pytorch_grad_cam", reason="pytorch_grad_cam (ROAD's reference) cannot be imported")

SIZE = (32, 48)
TOL = 1e-4
#: id -> (metric, options): the metrics with their defaults, and the fills whose replay is least obvious
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "irof": ("irof", {}),
    "region": ("region", {}),
    "region_uniform": ("region", {"patch_size": 5, "fill": "uniform", "seed": 3}),
    "pixelflip": ("pixelflip", {}),
    "road_gradcam": ("road", {}),
    "road_quantus": ("road", {"convention": "quantus"}),
    "faithcorr": ("faithcorr", {}),
    "deletion_rise_zeros": ("deletion", {"fill": "black"}),
    "deletion_study_fill": ("deletion", {}),
    "insertion": ("insertion", {}),
}
#: fast tests only: fewer steps where the defaults make a curve long (the slow tests use the defaults)
FAST: dict[str, dict[str, Any]] = {"deletion_rise_zeros": {"n_steps": 48}, "deletion_study_fill": {"n_steps": 48},
                                   "insertion": {"n_steps": 48}, "road_quantus": {"percentiles": range(1, 100, 8)}}
#: configurations the reference cannot express (checked to be the only ones skipped)
NO_REFERENCE = {("pixelflip", "lerf")}


@dataclass(frozen=True)
class Item:
    image_index: int
    target: ExplanationTarget
    saliency: np.ndarray
    explainer: str = "gradcam"


def images_of(source: str, n: int) -> torch.Tensor:
    if source == "generated":
        return torch.stack(photos(SIZE)[:n])
    imgs = real_images(SIZE, n)
    if not imgs:
        pytest.skip("no real frames: ../shared/data/nyuv2-sample/densedepth_examples is absent")
    return torch.stack(imgs)


@pytest.fixture(scope="module")
def model() -> TinyMTL:
    return TinyMTL()


@pytest.fixture(scope="module")
def engine(model: TinyMTL) -> Engine:
    return Engine(model, tasks_for())  # default settings; one trace for every test of the module


def grad_cam_items(model: torch.nn.Module, images: torch.Tensor, per_task: int | None) -> list[Item]:
    items = []
    for task in tasks_for().values():
        exps = [e for e in explain(model, images, task) if not e.is_zero]
        for i in range(len(images)):
            items += [Item(e.image_index, e.target, e.saliency) for e in exps if e.image_index == i][:per_task]
    return items


def disagreements(model: torch.nn.Module, engine: Engine, images: torch.Tensor, config: str,
                  per_task: int | None, fast: bool = False) -> tuple[list[tuple[Any, ...]], int, float]:
    """``(rows over tolerance, rows compared, largest difference)`` of one configuration."""
    name, options = CONFIGS[config]
    options = {**options, **FAST.get(config, {})} if fast else options
    metric = build_metrics([name], {name: options})[0]
    tasks = tasks_for()
    items = grad_cam_items(model, images, per_task)
    sps = [compute_superpixels(img) for img in images]
    results = evaluate(model, images, items, tasks, [metric], FamilySettings(n_random=1), sps, engine)
    bad, compared, worst = [], 0, 0.0
    for r in results:
        if r.ordering != "random" and (name, r.ordering) in NO_REFERENCE:
            continue
        assert r.status == "ok", (r.task, r.target_name, r.ordering, r.status)
        item = next(it for it in items if (it.image_index, it.target.task, it.target.target_id)
                    == (r.image_index, r.task, r.target_id))
        sal = random_map(r.seed, SIZE) if r.ordering == "random" else item.saliency
        img = images[r.image_index].numpy()
        f = scalar_fn(model, tasks[r.task], item.target, img, divisor=r.clean_score)
        check = reference_check(metric, f, img, sal, r.ordering, sps[r.image_index].labels)
        assert check.ok, check.note
        assert check.curve.shape == r.curve.shape, (config, r.ordering)
        assert r.score is not None
        diff = max(abs(r.score - check.score), float(np.abs(r.curve - check.curve).max()))
        worst = max(worst, diff)
        compared += 1
        if diff > TOL:
            bad.append((r.task, r.target_name, r.ordering, r.score, check.score, diff))
    return bad, compared, worst


@pytest.mark.parametrize("config", list(CONFIGS))
def test_metric_agrees_with_its_reference_on_a_generated_image(config: str, model: TinyMTL, engine: Engine) -> None:
    bad, compared, worst = disagreements(model, engine, images_of("generated", 1), config, per_task=1, fast=True)
    assert compared >= 6  # three tasks, two or three orderings
    assert not bad, (worst, bad)


@pytest.mark.parametrize("config", ["road_gradcam", "region", "faithcorr", "deletion_rise_zeros"])
def test_metric_agrees_with_its_reference_on_a_real_image(config: str, model: TinyMTL, engine: Engine) -> None:
    bad, compared, worst = disagreements(model, engine, images_of("nyuv2", 1), config, per_task=1, fast=True)
    assert compared >= 6
    assert not bad, (worst, bad)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["generated", "nyuv2"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_metric_agrees_with_its_reference_for_every_target(config: str, source: str, model: TinyMTL,
                                                           engine: Engine) -> None:
    bad, compared, worst = disagreements(model, engine, images_of(source, 2), config, per_task=None)
    assert compared >= 12
    assert not bad, (worst, bad)


def test_faithfulness_correlation_forwards_each_run_once_for_every_map_and_target(model: TinyMTL) -> None:
    images = images_of("generated", 1)
    items = grad_cam_items(model, images, per_task=2)
    engine = Engine(model, tasks_for())
    metric = build_metrics(["faithcorr"], {"faithcorr": {"nr_runs": 20}})[0]
    results = evaluate(model, images, items, tasks_for(), [metric], FamilySettings(n_random=2), None, engine)
    assert len({(r.task, r.target_id, r.ordering, r.replicate) for r in results}) == len(results) > 6
    assert engine.stats.rows == 20  # the runs depend on the seed and the image shape only


def region_items(model: RegionModel, image: torch.Tensor) -> list[Item]:
    sal = np.zeros((32, 32), np.float32)
    sal[4:12, 4:12] = 1.0
    sal += np.linspace(0, 0.1, 32, dtype=np.float32)[None]  # no ties outside the region
    with torch.no_grad():
        out = model(image)
    return [Item(0, t, sal) for name, task in tasks_for().items() for t in task.explanation_targets(out[name][0])]


def test_true_map_beats_random_which_beats_reversed_under_every_curve_metric() -> None:
    model, image = RegionModel(), red_square_image()[None]
    names = [n for n, make in METRICS.items() if make().kind == "curve"]
    assert {"irof", "deletion", "insertion", "road", "region", "pixelflip", "faithcorr"} <= set(names)
    items = region_items(model, image)
    results = evaluate(model, image, items, tasks_for(), build_metrics(names), FamilySettings(n_random=3),
                       [compute_superpixels(image[0])])
    norm: dict[tuple[str, str, int, str], list[float]] = {}
    for r in results:
        assert r.status == "ok", (r.metric, r.task, r.ordering, r.status)
        assert r.score_norm is not None
        assert 0.0 <= r.score_norm <= 1.0, (r.metric, r.score_norm)
        norm.setdefault((r.metric, r.task, r.target_id, r.ordering), []).append(r.score_norm)
    wrong = []
    for name in names:
        for it in items:
            key = (name, it.target.task, it.target.target_id)
            true, rnd, rev = norm[(*key, "morf")][0], float(np.mean(norm[(*key, "random")])), norm[(*key, "lerf")][0]
            if not true > rnd > rev:
                wrong.append((*key, true, rnd, rev))
    assert not wrong, wrong


def test_faithfulness_correlation_of_a_curve_moving_by_float_rounding_only_is_undefined() -> None:
    """A drop curve that moves by a float32 ulp has no meaningful r (its sign is rounding noise); one that moves
    by more than ``FLAT_CURVE`` has its Pearson r."""
    from types import SimpleNamespace

    from mtlx_core.faithfulness.faithcorr import FLAT_CURVE

    metric = build_metrics(["faithcorr"], {"faithcorr": {"nr_runs": 10}})[0]
    att = np.arange(10, dtype=np.float64)
    plan: Any = SimpleNamespace(extra={"attribution_sums": att})
    rounding = np.ones(10)
    rounding[[1, 4, 8]] = 1.0000000693704783  # the stored curve of a smoke control model (verify found it)
    assert all(np.isnan(metric.summarise(rounding, plan)))
    moving = 1.0 - 10 * FLAT_CURVE * att / att.max()
    r, norm = metric.summarise(moving, plan)
    assert r == pytest.approx(1.0)
    assert norm == pytest.approx(1.0)
