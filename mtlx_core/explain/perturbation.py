"""IROF's perturbations (decisions D16, D18, D21): segment orders, fill values and vectorised image building.

A curve is fully described by its segment order and, in ``quantus`` fill mode, one fill value per removal.
The image after ``k`` removals is ``where(rank(segment(p)) < k, fill[rank(segment(p))], image)``, so a chunk
of perturbed images is built with two gathers and one ``where`` from small per-curve tables. Two curves of
the same image whose orders share their first ``k`` segments have the same ``k``-th perturbed image (in both
fill modes); ``PrefixIndex`` gives such images one id so that each is forwarded once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

FILL_MODES: tuple[str, ...] = ("quantus", "fixed")


def segment_order(saliency: np.ndarray, labels: np.ndarray, n_segments: int, channels: int = 3) -> np.ndarray:
    """Segments by mean saliency, highest first, computed exactly as Quantus 0.6.0 does.

    The map is divided by its max |value| in float32, broadcast to the image's channels, and each segment's
    mean is NumPy's float32 mean of its values; ``np.argsort(-means)`` (default kind) orders them. Segments
    whose means are equal in exact arithmetic (plateaus of an upsampled map) are thus tied or split exactly
    as in Quantus, which a float64 mean would not reproduce.
    """
    a = saliency.astype(np.float32)
    if not np.all(a == 0.0):
        a = np.divide(a, np.max(np.abs(a)))
    flat = np.broadcast_to(a, (channels, *a.shape)).reshape(channels, -1)
    means = np.zeros(n_segments)
    for s, idx in enumerate(segment_pixels(labels, n_segments)):
        means[s] = np.mean(flat[:, idx])  # the same values in the same order as a[:, labels == s]
    return np.argsort(-means)


def segment_pixels(labels: np.ndarray, n_segments: int | None = None) -> list[np.ndarray]:
    """Flat pixel indices of each segment, ascending (the order of a boolean mask ``labels == s``)."""
    flat = labels.ravel()
    n = int(flat.max()) + 1 if n_segments is None else n_segments
    order = np.argsort(flat, kind="stable")
    return np.split(order, np.cumsum(np.bincount(flat, minlength=n))[:-1])


def quantus_fills(image: np.ndarray, labels: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Fill value of each removal: the float32 mean of the current perturbed image, computed as Quantus does.

    NumPy's float32 reduction is replayed step by step (not a running sum), so every perturbed image is
    bit-identical to Quantus' and chaotic layers (max-unpool index ties) see the same input.
    """
    current = image[None].astype(np.float32, copy=True)  # (1, C, H, W): Quantus' batch of one
    flat = current.reshape(current.shape[1], -1)  # a view
    pixels = segment_pixels(labels)
    fills = np.empty(len(order), dtype=np.float32)
    for r, s in enumerate(order):
        fills[r] = current.mean(axis=(0, 1, 2, 3))
        flat[:, pixels[s]] = fills[r]
    return fills


def random_saliency(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """The random baseline's map (D21): ``default_rng(seed).random(shape)``, the same for every target.

    It depends on nothing but the seed and the image size, so it never depends on the batch, and all targets
    of an image share the random curve's perturbed images.
    """
    return np.random.default_rng(seed).random(shape)


class PrefixIndex:
    """Ids of distinct perturbed images: one per (image, ordered prefix of removed segments)."""

    def __init__(self) -> None:
        self._children: dict[tuple[int, int], int] = {}
        self._roots: dict[int, int] = {}
        self.size = 0

    def _new(self) -> int:
        self.size += 1
        return self.size - 1

    def ids(self, image: int, order: np.ndarray) -> list[int]:
        """Id of the image after 1, 2, ..., len(order) removals."""
        node = self._roots.setdefault(image, -1 - image)  # roots are never forwarded
        out = []
        for s in order.tolist():
            key = (node, s)
            if key not in self._children:
                self._children[key] = self._new()
            node = self._children[key]
            out.append(node)
        return out


@dataclass
class CurveTables:
    """Per-curve tables for building perturbed images: ``inv_rank`` ``(Q, L)``, ``fills`` ``(Q, L)``."""

    inv_rank: torch.Tensor  # rank of segment s in curve q's order (L = not removed)
    fills: torch.Tensor  # fill value written at rank r (quantus mode)
    image_of: torch.Tensor  # (Q,) image index

    @classmethod
    def build(cls, orders: list[np.ndarray], fills: list[np.ndarray | None], image_of: list[int]) -> CurveTables:
        lmax = max(len(o) for o in orders)
        inv_rank = torch.full((len(orders), lmax), lmax, dtype=torch.long)
        fill_t = torch.zeros((len(orders), lmax), dtype=torch.float32)
        for q, (order, f) in enumerate(zip(orders, fills, strict=True)):
            inv_rank[q, torch.from_numpy(np.ascontiguousarray(order))] = torch.arange(len(order))
            if f is not None:
                fill_t[q, : len(f)] = torch.from_numpy(f)
        return cls(inv_rank, fill_t, torch.tensor(image_of, dtype=torch.long))


def perturbed_images(images: torch.Tensor, labels: torch.Tensor, tables: CurveTables, curve: torch.Tensor,
                     k: torch.Tensor, fill_mode: str) -> torch.Tensor:
    """Images ``(R, C, H, W)`` of curves ``curve`` ``(R,)`` after ``k`` ``(R,)`` removals."""
    img = tables.image_of[curve]
    rank = tables.inv_rank[curve].gather(1, labels[img].flatten(1))  # (R, H*W)
    removed = (rank < k[:, None]).view(len(curve), 1, *labels.shape[-2:])
    if fill_mode == "quantus":
        lmax = tables.inv_rank.shape[1]
        fill = tables.fills[curve].gather(1, rank.clamp_max(lmax - 1)).view(removed.shape)
    elif fill_mode == "fixed":
        fill = images[img].double().mean(dim=(-2, -1)).to(images.dtype)[:, :, None, None]
    else:
        raise ValueError(f"unknown fill mode {fill_mode!r}; valid modes: {', '.join(FILL_MODES)}")
    return torch.where(removed.to(images.device), fill.to(images.device), images[img])
