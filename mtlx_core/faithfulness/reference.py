"""Reference implementations of the faithfulness family (decision D28), for tests and ``verify``; never the pipeline.

Each reference scores ONE image ``x`` ``(C, H, W)`` float32 in [0, 1] and ONE saliency map ``a`` ``(H, W)`` with a
scalar function ``f(x (N, C, H, W) float32) -> (N,)`` (the task scalar on its fixed pixel set; the engine divides
by the clean value). The libraries are called, one image per call (so no batch-wide mean leaks), with the
function wrapped as a one-output torch module that records every value it returns, hence ``curve`` holds the raw
``f`` of exactly the images the library evaluated, in its order. ``docs/metrics_reference.md`` is the spec.

Public API (all return :class:`RefResult`)::

    quantus_irof_ref(f, x, a, fill_mode="quantus")
    quantus_region_perturbation_ref(f, x, a, patch_size=8, order="morf", regions_evaluation=100,
                                    perturb_baseline="black", seed=0)
    quantus_pixel_flipping_ref(f, x, a, features_in_step=1, perturb_baseline="black", seed=0)
    quantus_road_ref(f, x, a, percentages=None, noise=0.01, seed=0)
    quantus_faithfulness_correlation_ref(f, x, a, nr_runs=100, subset_size=224, perturb_baseline="black", seed=0)
    gradcam_road_ref(f, x, a, order="morf", percentiles=(10, ..., 90), seed=0)
    gradcam_road_combined_ref(f, x, a, percentiles=(10, ..., 90), seed=0)
    rise_deletion_ref(f, x, a, step=224, fill=0.0)
    rise_insertion_ref(f, x, a, step=224, klen=11, nsig=5.0)

Seeds: the global NumPy (Quantus) or torch CPU (pytorch-grad-cam) generator is seeded for the call and its state
restored afterwards. ``keep_images=True`` stores every evaluated image in ``extras["images"]``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mtlx_core.faithfulness.reference_orders import faithfulness_correlation_subsets

ScalarFn = Callable[[np.ndarray], np.ndarray]
GRADCAM_PERCENTILES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)


@dataclass
class RefResult:
    """Raw ``f`` per evaluated step, the library's summary score, ``f(x)`` and per-metric details."""

    curve: np.ndarray
    score: float
    clean: float
    extras: dict[str, Any] = field(default_factory=dict)


class Recorder(nn.Module):
    """``f`` as a ``(N, 1)`` float64 torch output; records each value (and optionally each image)."""

    def __init__(self, f: ScalarFn, keep_images: bool = False,
                 swap: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        super().__init__()
        self.f, self.keep_images, self.swap = f, keep_images, swap
        self.values: list[float] = []
        self.images: list[np.ndarray] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().numpy().astype(np.float32, copy=False)
        if self.swap is not None:
            arr = self.swap(arr)
        vals = np.asarray(self.f(arr), dtype=np.float64).reshape(len(arr))
        self.values.extend(vals.tolist())
        if self.keep_images:
            self.images.extend(np.array(arr, copy=True))
        return torch.from_numpy(vals)[:, None]


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Seed NumPy's global legacy RNG and torch's CPU RNG; restore both afterwards; silence library warnings."""
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if seed is not None:
            np.random.seed(seed)
            torch.manual_seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)


def _ensure_trapz() -> None:
    if not hasattr(np, "trapz"):  # NumPy >= 2.4 removed it; Quantus' calculate_auc calls it
        setattr(np, "trapz", np.trapezoid)  # noqa: B010


def _prepare(f: ScalarFn, x: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    a = np.ascontiguousarray(a, dtype=np.float32)
    if x.ndim != 3 or a.shape != x.shape[1:]:
        raise ValueError(f"x must be (C, H, W) and a (H, W); got {x.shape} and {a.shape}")
    return x, a, float(np.asarray(f(x[None]), dtype=np.float64).reshape(-1)[0])


def _run_quantus(metric: Any, rec: Recorder, x: np.ndarray, a: np.ndarray) -> Any:
    _ensure_trapz()
    return metric(model=rec.eval(), x_batch=x[None], y_batch=np.zeros(1, dtype=np.int64), a_batch=a[None],
                  channel_first=True, softmax=False, device="cpu", batch_size=1)


def _result(rec: Recorder, skip: int, score: float, clean: float, **extras: Any) -> RefResult:
    if rec.keep_images:
        extras["images"] = np.stack(rec.images[skip:])
    return RefResult(np.asarray(rec.values[skip:], dtype=np.float64), float(score), clean, extras)


def quantus_irof_ref(f: ScalarFn, x: np.ndarray, a: np.ndarray, fill_mode: str = "quantus",
                     keep_images: bool = False) -> RefResult:
    """Quantus 0.6.0 ``IROF`` (patched as ``explain.quantus_ref``): curve per removed segment, score = AOC."""
    import quantus

    from mtlx_core.explain.quantus_ref import _broadcast_mask_perturb

    x, a, clean = _prepare(f, x, a)
    fixed = x.astype(np.float64).mean(axis=(1, 2)).astype(np.float32) if fill_mode == "fixed" else None
    metric = quantus.IROF(segmentation_method="slic", abs=False, normalise=True, perturb_baseline="mean",
                          perturb_func=functools.partial(_broadcast_mask_perturb, fixed_fill=fixed),
                          return_aggregate=False, disable_warnings=True)
    rec = Recorder(f, keep_images)
    with _seeded(None):
        scores = _run_quantus(metric, rec, x, a)
    return _result(rec, 1, scores[0], clean)


def quantus_region_perturbation_ref(f: ScalarFn, x: np.ndarray, a: np.ndarray, patch_size: int = 8,
                                    order: str = "morf", regions_evaluation: int = 100,
                                    perturb_baseline: str = "black", seed: int | None = 0,
                                    keep_images: bool = False) -> RefResult:
    """Quantus 0.6.0 ``RegionPerturbation``: curve per perturbed patch (no step 0), score = AOPC.

    AOPC (Samek et al.) = ``sum_k (f_0 - f_k) / (L + 1)`` over ``k = 0..L`` (the ``k = 0`` term is 0);
    ``extras["quantus_auc"]`` is the class's ``get_auc_score``: ``np.trapz(f_0 - f_k, dx=1)`` over ``k = 1..L``.
    """
    import quantus

    x, a, clean = _prepare(f, x, a)
    metric = quantus.RegionPerturbation(patch_size=patch_size, order=order, regions_evaluation=regions_evaluation,
                                        perturb_baseline=perturb_baseline, abs=False, normalise=True,
                                        disable_warnings=True)
    rec = Recorder(f, keep_images)
    with _seeded(seed):
        diffs = np.asarray(_run_quantus(metric, rec, x, a)[0], dtype=np.float64)
        auc = metric.get_auc_score
    return _result(rec, 1, diffs.sum() / (len(diffs) + 1), clean, quantus_auc=float(auc), differences=diffs)


def quantus_pixel_flipping_ref(f: ScalarFn, x: np.ndarray, a: np.ndarray, features_in_step: int = 1,
                               perturb_baseline: str = "black", seed: int | None = 0,
                               keep_images: bool = False) -> RefResult:
    """Quantus 0.6.0 ``PixelFlipping``: curve per step (no step 0), score = ``np.trapz(curve, dx=1)``."""
    import quantus

    x, a, clean = _prepare(f, x, a)
    metric = quantus.PixelFlipping(features_in_step=features_in_step, perturb_baseline=perturb_baseline,
                                   abs=False, normalise=True, disable_warnings=True)
    rec = Recorder(f, keep_images)
    with _seeded(seed):
        _run_quantus(metric, rec, x, a)
        auc = metric.get_auc_score
    return _result(rec, 0, auc, clean)


def quantus_road_ref(f: ScalarFn, x: np.ndarray, a: np.ndarray, percentages: list[float] | None = None,
                     noise: float = 0.01, seed: int | None = 0, keep_images: bool = False) -> RefResult:
    """Quantus 0.6.0 ``ROAD``, patched for RGB input: curve per percentage, score = mean of the curve.

    Quantus broadcasts the map to the channels, so its ``C*H*W`` feature indices overrun the imputation's
    ``H*W`` grid (IndexError on RGB). Patch: Quantus runs on a one-channel stand-in of the image (ordering,
    ``k = int(H*W*p/100)``, loop all Quantus'), and the perturbation applies Quantus' own
    ``noisy_linear_imputation`` to the real RGB image with the pixels it is handed; the wrapped function
    sees that RGB image. Quantus' own summary (top-1 accuracy per percentage) is meaningless for one scalar
    output: ``extras["quantus_output"]``; the score is the curve's mean (an area with uniform spacing).
    """
    import quantus
    from quantus.functions.perturb_func import noisy_linear_imputation

    x, a, clean = _prepare(f, x, a)
    pending: list[np.ndarray] = []

    def perturb(arr: np.ndarray, indices: np.ndarray, **kwargs: Any) -> np.ndarray:
        pending.append(noisy_linear_imputation(arr=x, indices=indices, **kwargs))  # type: ignore[arg-type]
        return pending[-1][:1]

    metric = quantus.ROAD(percentages=percentages, noise=noise, perturb_func=perturb, abs=False, normalise=True,
                          return_aggregate=False, disable_warnings=True)
    rec = Recorder(f, keep_images, swap=lambda arr: np.stack([pending.pop(0) for _ in arr]))
    with _seeded(seed):
        out = _run_quantus(metric, rec, x[:1], a)
    curve = np.asarray(rec.values, dtype=np.float64)
    return _result(rec, 0, curve.mean(), clean, percentages=list(metric.percentages), quantus_output=out)


def quantus_faithfulness_correlation_ref(f: ScalarFn, x: np.ndarray, a: np.ndarray, nr_runs: int = 100,
                                         subset_size: int = 224, perturb_baseline: str = "black",
                                         seed: int | None = 0, keep_images: bool = False) -> RefResult:
    """Quantus 0.6.0 ``FaithfulnessCorrelation``: curve = ``f`` per run, score = Pearson(att_sums, f_0 - f_r).

    ``extras["subsets"]`` ``(nr_runs, subset_size)``: the flat ``C*H*W`` feature indices Quantus drew, replayed
    with :func:`reference_orders.faithfulness_correlation_subsets` (``None`` seed: not replayable).
    """
    import quantus

    x, a, clean = _prepare(f, x, a)
    metric = quantus.FaithfulnessCorrelation(nr_runs=nr_runs, subset_size=subset_size,
                                             perturb_baseline=perturb_baseline, abs=False, normalise=True,
                                             return_aggregate=False, disable_warnings=True)
    rec = Recorder(f, keep_images)
    with _seeded(seed):
        scores = _run_quantus(metric, rec, x, a)
    subsets = None if seed is None else faithfulness_correlation_subsets(seed, x.size, subset_size, nr_runs)
    return _result(rec, 1, scores[0], clean, subsets=subsets)


def _gradcam_call(metric: Callable[..., Any], f: ScalarFn, x: np.ndarray, a: np.ndarray,
                  seed: int | None, keep_images: bool) -> tuple[Recorder, float]:
    rec = Recorder(f, keep_images)
    with _seeded(seed):
        out = metric(torch.from_numpy(x[None].copy()), a[None], [lambda o: o[0]], rec.eval())
    return rec, float(np.asarray(out).reshape(-1)[0])


def gradcam_road_ref(f: ScalarFn, x: np.ndarray, a: np.ndarray, order: str = "morf",
                     percentiles: tuple[float, ...] = GRADCAM_PERCENTILES, seed: int | None = 0,
                     keep_images: bool = False) -> RefResult:
    """pytorch-grad-cam ``ROADMostRelevantFirstAverage`` / ``ROADLeastRelevantFirstAverage``.

    Curve: ``f`` after imputation at each percentile (in the given order; MoRF at ``p`` removes the map's top
    ``100 - p`` %); score = the library's output, ``mean_p float32(f_p) - float32(f_0)`` (float32).
    """
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage

    classes = {"morf": ROADMostRelevantFirstAverage, "lerf": ROADLeastRelevantFirstAverage}
    if order not in classes:
        raise ValueError(f"unknown order {order!r}; valid orders: {', '.join(classes)}")
    x, a, clean = _prepare(f, x, a)
    rec, score = _gradcam_call(classes[order](list(percentiles)), f, x, a, seed, keep_images)
    images = rec.images[1::2]  # calls alternate: clean, imputed
    rec.values, rec.images = rec.values[1::2], images
    return _result(rec, 0, score, clean, percentiles=list(percentiles))


def gradcam_road_combined_ref(f: ScalarFn, x: np.ndarray, a: np.ndarray,
                              percentiles: tuple[float, ...] = GRADCAM_PERCENTILES, seed: int | None = 0,
                              keep_images: bool = False) -> RefResult:
    """pytorch-grad-cam ``ROADCombined``: ``(LeRF - MoRF) / 2``; runs LeRF first, then MoRF, on one RNG stream.

    Curve: the LeRF values then the MoRF values (``2 * len(percentiles)``).
    """
    from pytorch_grad_cam.metrics.road import ROADCombined

    x, a, clean = _prepare(f, x, a)
    rec, score = _gradcam_call(ROADCombined(list(percentiles)), f, x, a, seed, keep_images)
    rec.values, rec.images = rec.values[1::2], rec.images[1::2]
    return _result(rec, 0, score, clean, percentiles=list(percentiles))


def rise_auc(arr: np.ndarray) -> float:
    """RISE's normalised AUC: ``(sum(arr) - arr[0] / 2 - arr[-1] / 2) / (len(arr) - 1)``."""
    arr = np.asarray(arr, dtype=np.float64)
    return float((arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1))


def rise_blur(x: np.ndarray, klen: int = 11, nsig: float = 5.0) -> np.ndarray:
    """RISE's insertion substrate: ``conv2d(x, gkern(klen, nsig), padding=klen // 2)`` (zero padding)."""
    from scipy.ndimage import gaussian_filter

    dirac = np.zeros((klen, klen))
    dirac[klen // 2, klen // 2] = 1
    k2d = gaussian_filter(dirac, nsig)  # as RISE's gkern: scipy defaults (mode "reflect", truncate 4)
    c = x.shape[0]
    kern = np.zeros((c, c, klen, klen))
    for i in range(c):
        kern[i, i] = k2d
    out = torch.nn.functional.conv2d(torch.from_numpy(np.asarray(x, dtype=np.float32)[None]),
                                     torch.from_numpy(kern.astype(np.float32)), padding=klen // 2)
    return out[0].numpy()


def _rise_game(f: ScalarFn, a: np.ndarray, start: np.ndarray, finish: np.ndarray, step: int,
               keep_images: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """RISE's ``CausalMetric.single_run``: score, then move the next ``step`` most salient pixels to ``finish``."""
    from mtlx_core.faithfulness.reference_orders import rise_order

    c = start.shape[0]
    hw = start[0].size
    n_steps = (hw + step - 1) // step
    order = rise_order(a)
    cur = start.reshape(c, hw).copy()
    fin = finish.reshape(c, hw)
    scores, images = np.empty(n_steps + 1), []
    for i in range(n_steps + 1):
        img = cur.reshape(start.shape)
        scores[i] = float(np.asarray(f(img[None]), dtype=np.float64).reshape(-1)[0])
        if keep_images:
            images.append(img.copy())
        if i < n_steps:
            coords = order[step * i: step * (i + 1)]
            cur[:, coords] = fin[:, coords]
    return scores, images


def rise_deletion_ref(f: ScalarFn, x: np.ndarray, a: np.ndarray, step: int = 224,
                      fill: float | np.ndarray = 0.0, keep_images: bool = False) -> RefResult:
    """RISE deletion: ``n_steps + 1`` points from the image to the fill (RISE: zeros), score = RISE AUC."""
    x, a, clean = _prepare(f, x, a)
    finish = np.broadcast_to(np.asarray(fill, dtype=np.float32).reshape(-1, 1, 1), x.shape)
    scores, images = _rise_game(f, a, x, np.ascontiguousarray(finish), step, keep_images)
    extras: dict[str, Any] = {"images": np.stack(images)} if keep_images else {}
    return RefResult(scores, rise_auc(scores), clean, extras)


def rise_insertion_ref(f: ScalarFn, x: np.ndarray, a: np.ndarray, step: int = 224, klen: int = 11,
                       nsig: float = 5.0, keep_images: bool = False) -> RefResult:
    """RISE insertion: ``n_steps + 1`` points from the blurred copy to the image, score = RISE AUC."""
    x, a, clean = _prepare(f, x, a)
    scores, images = _rise_game(f, a, rise_blur(x, klen, nsig), x, step, keep_images)
    extras: dict[str, Any] = {"images": np.stack(images)} if keep_images else {}
    return RefResult(scores, rise_auc(scores), clean, extras)
