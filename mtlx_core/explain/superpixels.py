"""SLIC superpixels for IROF (decision D16), computed once per image and shared by every target and model.

Public API::

    sp = compute_superpixels(image)          # image: (3, H, W) tensor or (H, W, 3) array, RGB in [0, 1]
    sp.labels                                # (H, W) int64, segments 0..n_segments-1
    sp.n_segments, sp.settings               # the count and the SlicSettings that produced it

The settings are Quantus' (scikit-image ``slic`` with ``start_label=0`` and defaults otherwise), so the
segments are exactly the ones Quantus' IROF builds for the same image. SLIC receives the image as float64
``H x W x 3``, as Quantus passes it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import skimage
import torch
from skimage.segmentation import slic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlicSettings:
    """What makes a segmentation reproducible (D16); ``skimage_version`` is recorded, not chosen."""

    n_segments: int = 100
    compactness: float = 10.0
    sigma: float = 0.0
    max_num_iter: int = 10
    start_label: int = 0
    skimage_version: str = field(default=str(getattr(skimage, "__version__", "unknown")))

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Superpixels:
    """Segments of one image: ``labels`` ``(H, W)`` int64 with values ``0..n_segments-1``."""

    labels: np.ndarray
    n_segments: int
    settings: SlicSettings

    def counts(self) -> np.ndarray:
        """Pixels per segment ``(n_segments,)``."""
        return np.bincount(self.labels.ravel(), minlength=self.n_segments)


def image_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """An image as float64 ``H x W x 3`` (accepts ``(3, H, W)`` tensors/arrays and ``(H, W, 3)`` arrays)."""
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"expected one image with 3 dimensions, got shape {arr.shape}")
    if arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = np.moveaxis(arr, 0, -1)
    if arr.shape[-1] != 3:
        raise ValueError(f"expected an RGB image (3, H, W) or (H, W, 3), got shape {arr.shape}")
    return arr.astype(np.float64)


def compute_superpixels(image: torch.Tensor | np.ndarray, settings: SlicSettings | None = None) -> Superpixels:
    """SLIC superpixels of one RGB image in [0, 1] (D16); labels are made contiguous from 0."""
    settings = settings or SlicSettings()
    labels = slic(image_hwc(image), n_segments=settings.n_segments, compactness=settings.compactness,
                  sigma=settings.sigma, max_num_iter=settings.max_num_iter, start_label=settings.start_label)
    labels = np.asarray(labels, dtype=np.int64) - settings.start_label
    uniq, inverse = np.unique(labels, return_inverse=True)
    if uniq[0] != 0 or uniq[-1] != len(uniq) - 1:  # SLIC's labels are contiguous in practice; make sure
        labels = inverse.reshape(labels.shape)
    n = len(uniq)
    if n == 1:
        logger.info("SLIC returned a single segment for an image of shape %s", labels.shape)
    return Superpixels(labels=labels, n_segments=n, settings=settings)

