"""Joint augmentation of a multi-task sample (decision D2; MTAN's RandomScaleCrop + horizontal flip).

A sample is a dict with any subset of ``image (3,H,W)``, ``segmentation (H,W)`` long, ``depth (1,H,W)`` and
``normals (3,H,W)``; other keys pass through untouched. Every map gets the same crop and flip:

- scale ``sc`` drawn uniformly from ``scales``; crop ``h = int(H / sc)``, ``w = int(W / sc)`` at a uniformly random
  top-left; resize back to ``H x W``: image and normals bilinear (``align_corners=True``, normals not
  re-normalised, as in MTAN), segmentation and depth nearest. Zooming in brings things closer: metric depth is
  divided by ``sc``, inverse depth (Cityscapes) multiplied by ``sc``; 0 (invalid) stays 0.
- horizontal flip with p = 0.5: width axis of every map reversed, normals' x (channel 0) negated.

``scale``/``top``/``left``/``flip`` arguments force a draw, so tests can be exact.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

DEFAULT_SCALES: tuple[float, ...] = (1.0, 1.2, 1.5)
DEPTH_KINDS: tuple[str, ...] = ("metric", "inverse")
MAP_KEYS: tuple[str, ...] = ("image", "segmentation", "depth", "normals")


def _spatial_size(sample: dict[str, torch.Tensor]) -> tuple[int, int]:
    sizes = {k: tuple(sample[k].shape[-2:]) for k in MAP_KEYS if k in sample}
    if not sizes:
        raise ValueError(f"sample has none of the map keys {MAP_KEYS}; keys: {sorted(sample)}")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"sample maps differ in spatial size: {sizes}")
    h, w = next(iter(sizes.values()))
    return int(h), int(w)


def _check_depth_kind(depth_kind: str) -> None:
    if depth_kind not in DEPTH_KINDS:
        raise ValueError(f"unknown depth_kind {depth_kind!r}; valid: {', '.join(DEPTH_KINDS)}")


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[0, high)``."""
    return int(torch.randint(high, (1,), generator=generator).item())


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize a (C,H,W) or (H,W) tensor to ``size``; nearest keeps values exactly (and the dtype)."""
    squeeze = x.dim() == 2
    y = x[None, None] if squeeze else x[None]
    dtype = y.dtype
    y = y.float() if not y.is_floating_point() else y
    if mode == "nearest":
        y = F.interpolate(y, size=size, mode="nearest")
    else:
        y = F.interpolate(y, size=size, mode=mode, align_corners=True)
    y = y.to(dtype)
    return y[0, 0] if squeeze else y[0]


def random_scale_crop(sample: dict[str, torch.Tensor], generator: torch.Generator | None,
                      scales: tuple[float, ...] = DEFAULT_SCALES, depth_kind: str = "metric", *,
                      scale: float | None = None, top: int | None = None,
                      left: int | None = None) -> dict[str, torch.Tensor]:
    """Random scale-crop of all maps (module docstring); ``scale``/``top``/``left`` force the draws.

    Returns a new dict; the input tensors are not modified.
    """
    _check_depth_kind(depth_kind)
    H, W = _spatial_size(sample)
    if scale is None:
        if not scales:
            raise ValueError("scales must not be empty")
        scale = float(scales[_randint(len(scales), generator)])
    if scale < 1.0:
        raise ValueError(f"scale must be >= 1 (a crop inside the image), got {scale}")
    h, w = int(H / scale), int(W / scale)
    if h < 1 or w < 1:
        raise ValueError(f"scale {scale} leaves an empty crop of a {H}x{W} sample")
    if top is None:
        top = _randint(H - h + 1, generator)
    if left is None:
        left = _randint(W - w + 1, generator)
    if not (0 <= top <= H - h and 0 <= left <= W - w):
        raise ValueError(f"crop {h}x{w} at ({top}, {left}) is outside the {H}x{W} sample")
    out = dict(sample)
    same = (h, w) == (H, W)
    for key, mode in (("image", "bilinear"), ("normals", "bilinear"), ("segmentation", "nearest"),
                      ("depth", "nearest")):
        if key not in sample:
            continue
        crop = sample[key][..., top:top + h, left:left + w]
        out[key] = crop.clone() if same else _resize(crop, (H, W), mode)
    if "depth" in out and scale != 1.0:
        out["depth"] = out["depth"] / scale if depth_kind == "metric" else out["depth"] * scale
    return out


def random_flip(sample: dict[str, torch.Tensor], generator: torch.Generator | None, *,
                flip: bool | None = None, p: float = 0.5) -> dict[str, torch.Tensor]:
    """Horizontal flip of all maps with probability ``p`` (``flip`` forces it); negates the normals' x."""
    if flip is None:
        flip = bool(torch.rand(1, generator=generator).item() < p)
    if not flip:
        return dict(sample)
    out = dict(sample)
    for key in MAP_KEYS:
        if key in sample:
            out[key] = torch.flip(sample[key], dims=(-1,))
    if "normals" in out:
        normals = out["normals"].clone()
        normals[0] = -normals[0]
        out["normals"] = normals
    return out


class JointAugment:
    """Scale-crop then flip, the training augmentation of D2. Call with a sample and an optional generator
    (``None`` draws from torch's global RNG, which DataLoader workers seed per worker)."""

    def __init__(self, depth_kind: str = "metric", scales: tuple[float, ...] = DEFAULT_SCALES,
                 flip_p: float = 0.5) -> None:
        _check_depth_kind(depth_kind)
        self.depth_kind = depth_kind
        self.scales = tuple(float(s) for s in scales)
        self.flip_p = float(flip_p)

    def __call__(self, sample: dict[str, torch.Tensor],
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        out = random_scale_crop(sample, generator, self.scales, self.depth_kind)
        return random_flip(out, generator, p=self.flip_p)

    def __repr__(self) -> str:
        return f"JointAugment(depth_kind={self.depth_kind!r}, scales={self.scales}, flip_p={self.flip_p})"
