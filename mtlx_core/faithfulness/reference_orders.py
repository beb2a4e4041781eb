"""The reference libraries' segmentations, orders and random draws, computed exactly as they compute them.

Companion of :mod:`mtlx_core.faithfulness.reference` (spec: ``docs/metrics_reference.md``). An engine that
reproduces a library's curve within 1e-4 needs that library's order bit for bit: saliency plateaus (ReLU'd,
upsampled Grad-CAM) produce ties, and ties fall wherever NumPy's default ``argsort`` (introsort / SIMD sort,
platform-dependent) puts them, on the very float32 values the library sorts. These helpers build those values
the library's way (Quantus' own functions where it has them) and sort them with the library's call.

Public API::

    a_n = quantus_normalise(a)                                   # (H, W) float32, Quantus' normalise_by_max
    labels, order = region_perturbation_order(a, (C, H, W), patch_size=8, order="morf")
    order = feature_order(a, channels)                           # PixelFlipping: flat (C*H*W) feature indices
    pixels = quantus_road_pixels(a, percentages)                 # ROAD (Quantus, patched): removed pixels per step
    removed = gradcam_road_removed(a, percentile, "morf")        # ROAD (pytorch-grad-cam): (H, W) bool
    order = rise_order(a)                                        # RISE: flat pixel indices, deletion order
    subsets = faithfulness_correlation_subsets(seed, n_features, subset_size, nr_runs)
    d = scaled_defaults(h, w, channels)                          # pixel-sized defaults scaled to the image
"""

from __future__ import annotations

import math

import numpy as np

REFERENCE_SIDE = 224  # every pixel-sized default below is given for 224 x 224 (x 3) inputs


def quantus_normalise(a: np.ndarray) -> np.ndarray:
    """Quantus' ``normalise_by_max`` of one map: ``a / max|a|`` in float32 (unchanged if all zero)."""
    a = np.asarray(a, dtype=np.float32)
    if np.all(a == 0.0):
        return a
    return np.divide(a, np.max(np.abs(a)))


def region_perturbation_order(a: np.ndarray, shape: tuple[int, int, int], patch_size: int = 8,
                              order: str = "morf") -> tuple[np.ndarray, np.ndarray]:
    """Quantus 0.6.0 ``RegionPerturbation``'s grid and order: ``(labels (H, W), order (n_patches,))``.

    The image is padded to multiples of ``patch_size`` (``get_padding_size``: floor half before, ceil half
    after) and cut into non-overlapping ``patch_size``-square blocks enumerated row-major; ``labels`` gives each
    image pixel its block id. A block's score is the float32 NumPy sum of the normalised map broadcast to the
    ``C`` channels over the whole padded block (padding = 0), ``order`` = ``argsort(-sums)`` ("morf") or
    ``argsort(sums)`` ("lerf"), default kind. ("random" draws ``np.random.permutation`` and is not replayed.)
    """
    from quantus.helpers import utils

    c, h, w = shape
    pad_h, pad_w = utils.get_padding_size(h, patch_size), utils.get_padding_size(w, patch_size)
    a_b = np.broadcast_to(quantus_normalise(a)[None, None], (1, c, h, w))
    a_pad = np.pad(a_b, ((0, 0), (0, 0), pad_h, pad_w), mode="constant")
    blocks: list[np.ndarray] = list(utils.get_block_indices(a_pad, patch_size))
    sums = np.stack([a_pad.reshape(1, -1)[np.arange(1)[:, None], b].sum(axis=-1) for b in blocks], -1)
    if order == "morf":
        ordered = np.argsort(-sums, -1)[0]
    elif order == "lerf":
        ordered = np.argsort(sums, -1)[0]
    else:
        raise ValueError(f"unknown order {order!r}; valid orders: morf, lerf")
    n_bw = a_pad.shape[-1] // patch_size
    rows = (np.arange(h) + pad_h[0]) // patch_size
    cols = (np.arange(w) + pad_w[0]) // patch_size
    labels = rows[:, None] * n_bw + cols[None, :]
    return labels, ordered


def feature_order(a: np.ndarray, channels: int) -> np.ndarray:
    """Quantus ``PixelFlipping`` / ``ROAD``'s order: ``argsort(-a_n)`` over the map broadcast to ``(C, H, W)``.

    Entries are flat feature indices ``c * H * W + pixel``: a pixel's channels are separate features whose
    positions in the order depend on how the sort breaks their ties.
    """
    a_b = np.broadcast_to(quantus_normalise(a)[None, None], (1, channels, *np.shape(a)))
    return np.argsort(-a_b.reshape(1, -1), axis=1)[0]


def quantus_road_pixels(a: np.ndarray, percentages: list[float] | None = None) -> list[np.ndarray]:
    """Removed flat pixel indices per percentage for Quantus' ROAD run on one channel (this project's patch).

    ``order = argsort(-a_n.ravel())`` (default kind), ``k = int(H * W * p / 100)``, pixels ``order[:k]`` in that
    order (the order Quantus hands them to the imputation, which aligns its noise with it).
    """
    percentages = list(range(1, 100, 2)) if percentages is None else list(percentages)
    order = np.argsort(-quantus_normalise(a).reshape(1, -1), axis=1)[0]
    size = int(np.size(a))
    return [order[: int(size * p / 100)] for p in percentages]


def gradcam_road_removed(a: np.ndarray, percentile: float, order: str = "morf") -> np.ndarray:
    """pytorch-grad-cam ROAD's removed pixels at one percentile: ``(H, W)`` bool.

    MoRF: ``removed = ~(cam < np.percentile(cam, p))`` on the float32 map (ties at the threshold are removed,
    so about ``100 - p`` % are removed); LeRF does the same on ``1 - cam`` (float32).
    """
    cam = np.asarray(a, dtype=np.float32)
    if order == "lerf":
        cam = np.float32(1) - cam
    elif order != "morf":
        raise ValueError(f"unknown order {order!r}; valid orders: morf, lerf")
    return ~(cam < np.percentile(cam, percentile))


def rise_order(a: np.ndarray) -> np.ndarray:
    """RISE's ``salient_order``: ``np.flip(np.argsort(a.reshape(1, HW)), -1)`` (ascending default sort, reversed)."""
    return np.flip(np.argsort(np.asarray(a).reshape(1, -1), axis=1), axis=-1)[0]


def faithfulness_correlation_subsets(seed: int, n_features: int, subset_size: int = 224,
                                     nr_runs: int = 100) -> np.ndarray:
    """The feature subsets Quantus' ``FaithfulnessCorrelation`` draws for ONE image after ``np.random.seed(seed)``.

    Per run: ``np.random.choice(n_features, subset_size, replace=False)`` (legacy global RNG: a permutation of
    all ``n_features``, first ``subset_size`` kept), then the perturbation's ``get_baseline_dict`` draws one
    ``np.random.uniform(0, 1, size=1)`` even for the "black" baseline. Returns ``(nr_runs, subset_size)``.
    """
    rs = np.random.RandomState(seed)
    out = np.empty((nr_runs, subset_size), dtype=np.int64)
    for r in range(nr_runs):
        out[r] = rs.choice(n_features, subset_size, replace=False)
        rs.uniform(0.0, 1.0, size=1)
    return out


def scaled_defaults(h: int, w: int, channels: int = 3) -> dict[str, float | int]:
    """Pixel-sized defaults of the reference implementations, scaled from 224 x 224 to ``h x w`` (D28).

    Lengths scale with ``f = min(h, w) / 224`` (the engine's convention, ``plan.rise_kernel``); pixel counts
    with the area ratio ``h * w / 224 ** 2`` so that they keep their share of the image.
    """
    f = min(h, w) / REFERENCE_SIDE
    area = h * w / REFERENCE_SIDE**2
    return {
        "region_patch_size": max(1, round(8 * f)),  # Quantus RegionPerturbation patch_size=8
        "fc_subset_size": max(2, round(224 * area * channels / 3)),  # Quantus FaithfulnessCorrelation, features
        "rise_step": max(1, round(224 * area)),  # RISE notebook: 224 pixels per step at 224 x 224
        "rise_blur_sigma": 5 * f,  # RISE notebook: gkern(klen=11, nsig=5)
        "rise_blur_klen": max(3, round(11 * f) | 1),
        "pixel_flipping_features_in_step": _nearest_divisor(h * w, channels * h * w / 224),  # NOT Quantus' 1
    }


def _nearest_divisor(n: int, target: float) -> int:
    """The divisor of ``n`` closest to ``target`` (Quantus asserts ``H * W % features_in_step == 0``)."""
    divisors = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    divisors += [n // d for d in divisors]
    return min(divisors, key=lambda d: (abs(d - target), d))
