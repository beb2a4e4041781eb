"""What one perturbation curve is, for the engine: which pixels change at which step, and what they become.

A curve of image ``i`` is a ``step_map`` ``(H, W)``: the step at which each pixel is perturbed (``n_steps`` =
never), built from a division of the image into groups (SLIC segments, square patches, pixels in equal
steps) and an order of the groups (saliency, reversed, random). The image after ``k`` steps is
``where(step_map < k, fill, image)`` for deletion and ``where(step_map < k, image, baseline)`` for insertion.
``steps`` lists the ``k`` the metric evaluates (``0`` is the clean image for deletion, the baseline for
insertion).

Fills (decision D18 and the metrics' references, D28): ``quantus`` (one scalar per step: the float32 mean of
the current perturbed image, replayed as Quantus computes it), ``fixed`` (the original image's per-channel
mean), ``blur`` (a Gaussian-blurred copy, RISE's kernel scaled to the image), ``uniform`` (seeded uniform noise
in [0, 1], one noise image per image and seed), ``black`` (zeros, RISE's substrate), ``min`` (the image's minimum
over all channels and pixels: what Quantus calls "black") and ``road`` (noisy linear imputation of the
perturbed pixels from their neighbours, Rong et al. 2022: depends on the perturbed set, so it is built per
perturbed image). Quantus' "uniform" (one scalar drawn per step) is a per-step table: ``fill_table`` for
accumulating curves over a ``(H, W)`` step map, ``step_fill`` for curves with explicit ``changed`` sets.

Two curves with equal ``root`` whose orders share their first ``k`` groups have the same ``k``-th image; the
engine forwards it once (``PrefixIndex``).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from mtlx_core.explain.perturbation import quantus_fills, segment_pixels

FILLS: tuple[str, ...] = ("quantus", "fixed", "blur", "uniform", "black", "min", "road")
DIRECTIONS: tuple[str, ...] = ("deletion", "insertion")
#: RISE's blur kernel at its 224-pixel input: 11 x 11, Gaussian of sigma 5 (``gkern(11, 5)``)
RISE_KLEN, RISE_SIGMA, REFERENCE_SIDE = 11, 5.0, 224


@dataclass(frozen=True)
class FillSpec:
    """How perturbed pixels are replaced; ``seed`` for ``uniform`` and ``road`` noise, ``noise`` ROAD's std."""

    kind: str = "quantus"
    seed: int = 0
    noise: float = 0.01
    blur_scale: float = 1.0  # 1: RISE's kernel scaled by min(H, W) / 224

    def __post_init__(self) -> None:
        if self.kind not in FILLS:
            raise ValueError(f"unknown fill {self.kind!r}; valid fills: {', '.join(FILLS)}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(eq=False)
class CurvePlan:
    """One curve of one image (see the module docstring)."""

    image: int
    step_map: np.ndarray  # (H, W) or (C, H, W) int32: step at which each pixel (feature) changes; n_steps = never
    order: np.ndarray  # group ids in perturbation order (n_steps,), for prefix sharing
    steps: np.ndarray  # evaluated k, ascending, in 0..n_steps
    fill: FillSpec
    direction: str = "deletion"
    root: Hashable = None  # curves with equal root and order prefix share images; None: a root of its own
    #: kind ``quantus``: the scalar written at each step (n_steps,), indexed by ``step_map`` (Quantus' running
    #: means, or any per-step scalars such as its "uniform" draws)
    fill_table: np.ndarray | None = None
    start: Hashable = None  # curves with equal start share their step-0 image (insertion's baseline)
    #: explicit perturbed set of each step k = 1..n_steps, ``(n_steps, H, W)`` or ``(n_steps, C, H, W)`` bool,
    #: for metrics whose steps do not accumulate (ROAD's percentiles, Faithfulness Correlation's subsets);
    #: overrides ``step_map`` (keep ``root`` None: such curves share no prefix)
    changed: np.ndarray | None = None
    #: per-step scalar fill ``(n_steps,)`` for fills Quantus draws once per step (``uniform``); overrides the
    #: fill image
    step_fill: np.ndarray | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return len(self.order)


def step_map_of(labels: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Step of every pixel from a group map ``labels`` ``(H, W)`` and the groups' order."""
    rank = np.full(int(labels.max()) + 1, len(order), dtype=np.int32)
    rank[np.asarray(order)] = np.arange(len(order), dtype=np.int32)
    return rank[labels]


def segment_plan(image: np.ndarray, index: int, labels: np.ndarray, order: np.ndarray, steps: np.ndarray,
                 fill: FillSpec, direction: str, root: Hashable) -> CurvePlan:
    """A curve over a fixed division ``labels`` (SLIC segments, patches): groups removed in ``order``."""
    table = quantus_fills(image, labels, order) if fill.kind == "quantus" else None
    return CurvePlan(index, step_map_of(labels, order), np.asarray(order), steps, fill, direction, root, table)


def rise_kernel(height: int, width: int, scale: float = 1.0) -> np.ndarray:
    """RISE's ``gkern(klen, nsig)`` (a Gaussian filter of a centred delta) with klen and sigma scaled by
    ``scale * min(H, W) / 224``; klen odd and at least 3."""
    f = scale * min(height, width) / REFERENCE_SIDE
    klen = max(3, round(RISE_KLEN * f) | 1)
    delta = np.zeros((klen, klen))
    delta[klen // 2, klen // 2] = 1.0
    return gaussian_filter(delta, RISE_SIGMA * f).astype(np.float32)


def fill_image(image: np.ndarray, fill: FillSpec) -> np.ndarray | None:
    """The image-valued fill ``(C, H, W)`` of one image (None for ``quantus`` and ``road``, built per step)."""
    _, h, w = image.shape
    if fill.kind == "fixed":
        return np.broadcast_to(image.astype(np.float64).mean(axis=(1, 2)).astype(np.float32)[:, None, None],
                               image.shape).copy()
    if fill.kind == "black":
        return np.zeros_like(image, dtype=np.float32)
    if fill.kind == "min":  # Quantus' "black": the (perturbed) image's minimum, which perturbing never lowers
        return np.full(image.shape, image.min(), dtype=np.float32)
    if fill.kind == "uniform":
        return np.random.default_rng(fill.seed).random(image.shape).astype(np.float32)
    if fill.kind == "blur":
        k = torch.from_numpy(rise_kernel(h, w, fill.blur_scale))
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[:, None]
        return F.conv2d(x, k[None, None], padding=k.shape[-1] // 2)[:, 0].numpy()
    return None


def road_image(image: np.ndarray, removed: np.ndarray, fill: FillSpec, draw: np.ndarray | None = None,
               pixels: np.ndarray | None = None) -> np.ndarray:
    """ROAD's noisy linear imputation of the ``removed`` pixels of the clean ``image``
    (``mtlx_core.faithfulness.road_fill``); ``draw``: the noise draw to use (a metric replays a library's
    random stream), else one seeded by ``fill.seed``. Without ``pixels`` the imputation is pytorch-grad-cam's
    (``draw`` ``(C, k)`` float32, pixels in ascending flat index, noise added in float32); with ``pixels`` (the
    removed flat indices in the order Quantus hands them over) it is Quantus' (``draw`` ``(C, k)`` aligned with
    ``pixels``, added in float64)."""
    from mtlx_core.faithfulness.road_fill import noisy_linear_impute, quantus_noisy_linear_impute

    if pixels is not None:
        rs = None if draw is not None else np.random.RandomState(fill.seed)
        return quantus_noisy_linear_impute(image, pixels, fill.noise, rs=rs, draw=draw)
    if draw is not None:
        return noisy_linear_impute(image, removed, fill.noise, draw=draw)
    return noisy_linear_impute(image, removed, fill.noise, fill.seed)


class PrefixIndex:
    """Ids of distinct perturbed images: one per (root, ordered prefix of perturbed groups)."""

    def __init__(self) -> None:
        self._children: dict[tuple[int, int], int] = {}
        self._roots: dict[Hashable, int] = {}
        self.size = 0

    def root(self, key: Hashable) -> int:
        """The node of the root itself (k = 0)."""
        if key not in self._roots:
            self._roots[key] = self.size
            self.size += 1
        return self._roots[key]

    def ids(self, key: Hashable, order: np.ndarray) -> list[int]:
        """Node of the image after 0, 1, ..., len(order) steps."""
        node = self.root(key)
        out = [node]
        for s in order.tolist():
            nxt = self._children.get((node, s))
            if nxt is None:
                nxt = self._children[(node, s)] = self.size
                self.size += 1
            node = nxt
            out.append(node)
        return out


def groups_by_rank(ranking: np.ndarray, n_groups: int) -> np.ndarray:
    """Pixels in equal steps: group ``g`` = the pixels of ranks ``[g * step, (g + 1) * step)`` of ``ranking``
    (flat pixel indices, most relevant first), ``step = ceil(H * W / n_groups)``; returns labels ``(H*W,)``."""
    hw = len(ranking)
    step = -(-hw // n_groups)
    labels = np.empty(hw, dtype=np.int64)
    labels[ranking] = np.arange(hw) // step
    return labels


__all__ = ["DIRECTIONS", "FILLS", "CurvePlan", "FillSpec", "PrefixIndex", "fill_image", "groups_by_rank",
           "rise_kernel", "road_image", "segment_pixels", "segment_plan", "step_map_of"]
