"""One score of the family recomputed by its reference implementation, on the engine's footing (D28).

Used by ``mtlx_core.verify``, the agreement tests and ``bench/faithfulness_speed.py``; never by the pipeline.
The references (``reference.py``) score one image with a scalar function ``f``; here ``f`` is the task scalar
over the clean value the engine divided by (``scalar_fn``), so a reference's curve is directly comparable with a
stored curve. ``reference_check`` maps a metric object (its settings as recorded), an ordering and a map to the
reference call, and returns the reference's curve in the metric's step order and its score in the metric's
definition, or the reason why the reference cannot reproduce that configuration.

Orderings: ``morf`` and ``random`` give the reference the map itself; ``lerf`` uses the library's own reversed
order where it has one (Region Perturbation, pytorch-grad-cam's ROAD), Faithfulness Correlation's reversed map
``max(a) - a``, and otherwise a map of the engine's reversed ranks, which fixes the reference's order to the
reversed order (IROF: one value per segment; RISE and Quantus' ROAD: one value per pixel). Pixel-Flipping's
reversed order has no map (a pixel's channel features tie): not checked.

Public API::

    f = scalar_fn(model, task, target, image, options, divisor=clean_score)
    check = reference_check(metric, f, image, saliency, "morf", labels)   # Check(curve, score) or Check(note=...)
    with quantus_segments(labels): ...                                    # Quantus' SLIC replaced by labels
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from unittest import mock

import numpy as np
import torch
from torch import nn

from mtlx_core.explain.perturbation import segment_order
from mtlx_core.faithfulness import reference as R
from mtlx_core.faithfulness.deletion import Deletion, pixel_ranking
from mtlx_core.faithfulness.faithcorr import FaithfulnessCorrelation, reversed_map
from mtlx_core.faithfulness.irof import Irof
from mtlx_core.faithfulness.metric import Metric
from mtlx_core.faithfulness.pixelflip import PixelFlipping
from mtlx_core.faithfulness.plan import FillSpec, fill_image, rise_kernel
from mtlx_core.faithfulness.reference_orders import quantus_normalise, rise_order
from mtlx_core.faithfulness.region import RegionPerturbation
from mtlx_core.faithfulness.road import Road
from mtlx_core.tasks.base import DEFAULT_SCORE_OPTIONS, ExplanationTarget, ScoreOptions, Task

QUANTUS_BASELINES = {"min": "black", "uniform": "uniform"}


#: (metric, ordering) rows that no reference library can recompute, and why (``verify`` samples around them)
NO_REFERENCE: dict[tuple[str, str], str] = {
    ("pixelflip", "lerf"): "Quantus' PixelFlipping has no reversed order, and no map gives it"}


@dataclass
class Check:
    """The reference's curve (the metric's step order) and score, or ``note``: why there is none."""

    curve: np.ndarray = field(default_factory=lambda: np.zeros(0))
    score: float = float("nan")
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.note


def scalar_fn(model: nn.Module, task: Task, target: ExplanationTarget, image: torch.Tensor | np.ndarray,
              options: ScoreOptions = DEFAULT_SCORE_OPTIONS, divisor: float | None = None) -> R.ScalarFn:
    """``f(x (N, C, H, W)) -> (N,)``: the task scalar of ``target`` (eager model, one image per forward, as the
    libraries run it) over ``divisor`` (the clean value the engine divided by; default: recomputed)."""
    model = model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    x0 = torch.as_tensor(np.asarray(image, dtype=np.float32), device=device)[None]
    with torch.inference_mode():
        clean = model(x0)[task.name]
    mask = target.mask[None].to(device)
    ids = torch.tensor([target.target_id], device=device)

    def raw(x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x))
        with torch.inference_mode():
            for i in range(len(x)):
                pred = model(torch.from_numpy(np.ascontiguousarray(x[i:i + 1], dtype=np.float32)).to(device))
                out[i] = float(task.perturbation_score(pred[task.name], clean, mask, ids, options)[0])
        return out

    scale = float(raw(x0.cpu().numpy())[0]) if divisor is None else float(divisor)
    return lambda x: raw(np.asarray(x)) / scale


@contextmanager
def quantus_segments(labels: np.ndarray | None) -> Iterator[None]:
    """Quantus' IROF segments the image with its own SLIC defaults; use the engine's ``labels`` instead."""
    if labels is None:
        yield
        return
    import quantus.helpers.utils as qutils

    def segments(img: np.ndarray, segmentation_method: str) -> np.ndarray:
        return labels.copy()

    with mock.patch.object(qutils, "get_superpixel_segments", side_effect=segments):
        yield


def rank_map(order: np.ndarray, shape: tuple[int, int], labels: np.ndarray | None = None) -> np.ndarray:
    """A map whose descending order is exactly ``order`` (pixels, or segments of ``labels``): distinct values."""
    n = len(order)
    value = np.empty(n, dtype=np.float32)
    value[np.asarray(order)] = (n - np.arange(n)).astype(np.float32) / n
    return value[labels] if labels is not None else value.reshape(shape)


def reference_check(metric: Metric, f: R.ScalarFn, image: np.ndarray, saliency: np.ndarray, ordering: str,
                    labels: np.ndarray | None = None) -> Check:
    """The reference of one (metric, ordering, map) on ``f`` (see the module docstring)."""
    x = np.ascontiguousarray(image, dtype=np.float32)
    a = np.asarray(saliency, dtype=np.float32)
    lerf = ordering == "lerf"
    shape = (x.shape[1], x.shape[2])
    if isinstance(metric, Irof):
        if labels is None:
            return Check(note="irof needs the image's superpixels")
        if lerf:
            order = segment_order(a, labels, int(labels.max()) + 1, x.shape[0])[::-1]
            a = rank_map(order, shape, labels)
        with quantus_segments(labels):
            res = R.quantus_irof_ref(f, x, a, metric.settings.fill)
        return Check(res.curve, res.score)
    if isinstance(metric, Deletion):  # Insertion too
        return _rise(metric, f, x, a, lerf)
    if isinstance(metric, RegionPerturbation):
        s = metric.settings
        if s.fill not in QUANTUS_BASELINES:
            return Check(note=f"Quantus has no baseline for fill {s.fill!r}")
        res = R.quantus_region_perturbation_ref(f, x, a, metric.patch_size(shape), "lerf" if lerf else "morf",
                                                s.regions_evaluation, QUANTUS_BASELINES[s.fill], s.seed)
        return Check(res.curve, res.score)
    if isinstance(metric, PixelFlipping):
        s = metric.settings
        if lerf:
            return Check(note=NO_REFERENCE[("pixelflip", "lerf")])
        if s.fill not in QUANTUS_BASELINES:
            return Check(note=f"Quantus has no baseline for fill {s.fill!r}")
        res = R.quantus_pixel_flipping_ref(f, x, a, metric.features_in_step(shape, x.shape[0]),
                                           QUANTUS_BASELINES[s.fill], s.seed)
        return Check(res.curve, res.score)
    if isinstance(metric, Road):
        return _road(metric, f, x, a, lerf)
    if isinstance(metric, FaithfulnessCorrelation):
        s = metric.settings
        if s.fill not in QUANTUS_BASELINES:
            return Check(note=f"Quantus has no baseline for fill {s.fill!r}")
        res = R.quantus_faithfulness_correlation_ref(f, x, reversed_map(a) if lerf else a, s.nr_runs,
                                                     metric.subset_size(shape, x.shape[0]),
                                                     QUANTUS_BASELINES[s.fill], s.seed)
        return Check(res.curve, res.score)
    return Check(note=f"no reference for metric {metric.label!r}")


def _rise(metric: Deletion, f: R.ScalarFn, x: np.ndarray, a: np.ndarray, lerf: bool) -> Check:
    """RISE's ``CausalMetric`` loop (``reference._rise_game``) with the metric's fill."""
    _, h, w = x.shape
    step = -(-h * w // metric.settings.n_steps)
    if lerf:
        a = rank_map(pixel_ranking(a, True), (h, w))
    fill = metric.settings.fill
    if metric.direction == "insertion":
        if fill == "blur":
            k = rise_kernel(h, w, FillSpec(fill).blur_scale)
            f_ref = min(h, w) / 224 * FillSpec(fill).blur_scale
            res = R.rise_insertion_ref(f, x, a, step, klen=k.shape[-1], nsig=5.0 * f_ref)
            return Check(res.curve, res.score)
        start = fill_image(x, FillSpec(fill))
        if start is None:
            return Check(note=f"insertion from fill {fill!r} has no reference")
        curve, _ = R._rise_game(f, a, start, x, step, False)
        return Check(curve, R.rise_auc(curve))
    if fill == "quantus":
        curve = _rise_running_mean(f, x, a, step)
        return Check(curve, R.rise_auc(curve))
    finish = fill_image(x, FillSpec(fill))
    if finish is None:
        return Check(note=f"deletion to fill {fill!r} has no reference")
    curve, _ = R._rise_game(f, a, x, finish, step, False)
    return Check(curve, R.rise_auc(curve))


def _rise_running_mean(f: R.ScalarFn, x: np.ndarray, a: np.ndarray, step: int) -> np.ndarray:
    """RISE's deletion loop whose substrate is the study fill (D18): before each step, the float32 mean of the
    current image, as Quantus computes its "mean" baseline."""
    c, h, w = x.shape
    n_steps = (h * w + step - 1) // step
    order = rise_order(a)
    cur = x[None].copy()
    flat = cur.reshape(c, h * w)
    scores = np.empty(n_steps + 1)
    for i in range(n_steps + 1):
        scores[i] = float(np.asarray(f(cur)).reshape(-1)[0])
        if i < n_steps:
            fill = cur.mean(axis=(0, 1, 2, 3))
            flat[:, order[step * i: step * (i + 1)]] = fill
    return scores


def _road(metric: Road, f: R.ScalarFn, x: np.ndarray, a: np.ndarray, lerf: bool) -> Check:
    s = metric.settings
    steps = metric.step_order()
    if s.convention == "gradcam":
        if s.noise != 0.01:
            return Check(note="pytorch-grad-cam's imputer has a fixed noise of 0.01")
        if importlib.util.find_spec("pytorch_grad_cam") is None:
            return Check(note="pytorch-grad-cam is not installed (pip install grad-cam, or the dev extra)")
        res = R.gradcam_road_ref(f, x, a, "lerf" if lerf else "morf", tuple(metric.percentiles()), s.seed)
        return Check(res.curve[steps], float(res.score))  # float32 mean of float32(f_p) - float32(f_0)
    if lerf:
        order = np.argsort(-quantus_normalise(a).reshape(1, -1), axis=1)[0][::-1]
        a = rank_map(order, a.shape)
    res = R.quantus_road_ref(f, x, a, list(metric.percentiles()), s.noise, s.seed)
    return Check(res.curve[steps], float(res.score) - 1.0)
