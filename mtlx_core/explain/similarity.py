"""How far a pruned model's explanation moved from the dense model's: Spearman, SSIM, top-k IoU.

All three compare the input-resolution Grad-CAM maps (float in [0, 1], the maps IROF ranks segments by):

- ``spearman``: Spearman rank correlation of the pixel values (NaN when either map is constant);
- ``ssim``: ``skimage.metrics.structural_similarity`` with ``data_range=1`` (default 7 x 7 window);
- ``topk_iou``: IoU of the ``k = round(topk * pixels)`` highest pixels of each map (ties: lower index first).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity


@dataclass(frozen=True)
class Similarity:
    spearman: float
    ssim: float
    topk_iou: float
    topk: float
    topk_pixels: int


def top_k(a: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values of the flattened map (stable: ties keep the lower index)."""
    return np.argsort(-a.ravel(), kind="stable")[:k]


def map_similarity(pruned: np.ndarray, dense: np.ndarray, topk: float = 0.2) -> Similarity:
    """Similarity of two maps of the same shape."""
    if pruned.shape != dense.shape:
        raise ValueError(f"maps differ in shape: {pruned.shape} vs {dense.shape}")
    if not 0.0 < topk <= 1.0:
        raise ValueError(f"topk must be a fraction in (0, 1], got {topk}")
    a, b = pruned.astype(np.float64), dense.astype(np.float64)
    constant = a.max() == a.min() or b.max() == b.min()
    rho = float("nan") if constant else float(spearmanr(a.ravel(), b.ravel()).statistic)
    win = min(7, *a.shape)
    win -= 1 - win % 2  # odd
    ssim = float(structural_similarity(a, b, data_range=1.0, win_size=win)) if win >= 3 else float("nan")
    k = max(1, round(topk * a.size))
    inter = len(np.intersect1d(top_k(a, k), top_k(b, k), assume_unique=True))
    return Similarity(rho, ssim, inter / (2 * k - inter), topk, k)
