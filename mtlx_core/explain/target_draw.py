"""Which images and which targets a study explains: seeded and unbiased (decision D26, issue 16).

- Images: a seeded random sample of the evaluation split without replacement (:func:`sample_images`), the same
  for every model of a study; the first ``n`` of one fixed permutation, so a larger ``n`` only adds images.
- Targets: where a study limits the targets per image and task to ``k``, :func:`draw_targets` draws them with a
  seeded random choice among the image's targets, stratified so every class, depth bin and octant appears
  across the images: images are visited in the sample's order and each takes the ``k`` targets drawn least
  often so far (ties: the targets seen in fewer images so far, then a seeded coin per image and task). Region
  size plays no part (never "the largest pixel sets", which any ordering of superpixels hits), and the draw of
  an image depends only on the images before it, so a larger sample keeps the earlier draws.

Public API::

    idx = sample_images(len(val), 32, seed=0)          # split indices, prefix-stable
    drawn = draw_targets(candidates, k=2, seed=0, keys=image_ids, task="segmentation")
    TargetDraw(k=2, seed=0).to_dict()                   # what is recorded with every drawn target
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

IMAGE_SAMPLES = ("random", "first")


class HasTargetId(Protocol):
    @property
    def target_id(self) -> int: ...


T = TypeVar("T", bound=HasTargetId)


@dataclass(frozen=True)
class TargetDraw:
    """The rule that chose an image's targets: ``all`` (k None) or ``stratified_random`` (k per task)."""

    k: int | None = None
    seed: int = 0
    #: (task, k) pairs overriding ``k`` for those tasks (a study may draw more targets for one task of one arm)
    task_k: tuple[tuple[str, int | None], ...] = ()

    def k_for(self, task: str) -> int | None:
        return dict(self.task_k).get(task, self.k)

    @property
    def rule(self) -> str:
        return "all" if self.k is None and all(k is None for _, k in self.task_k) else "stratified_random"

    def rule_for(self, task: str) -> str:
        return "all" if self.k_for(task) is None else "stratified_random"

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"rule": self.rule, "k": self.k, "seed": self.seed}
        if self.task_k:  # absent when no task overrides k: older stores' unit keys stay valid
            d["task_k"] = [list(x) for x in self.task_k]
        return d


def sample_images(n_split: int, n: int, seed: int = 0, rule: str = "random") -> list[int]:
    """Indices of ``min(n, n_split)`` images of a split: a seeded permutation's first ``n`` (D26) or the
    first ``n`` (``rule="first"``, for reproducing older stores)."""
    if rule not in IMAGE_SAMPLES:
        raise ValueError(f"unknown image sample rule {rule!r}; valid rules: {', '.join(IMAGE_SAMPLES)}")
    if n < 0 or n_split < 0:
        raise ValueError(f"image counts must be non-negative, got n={n}, n_split={n_split}")
    n = min(n, n_split)
    if rule == "first":
        return list(range(n))
    perm = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1D26])).permutation(n_split)
    return [int(i) for i in perm[:n]]


def _coin_seed(seed: int, key: str, task: str) -> list[int]:
    digest = hashlib.sha256(f"{key}|{task}".encode()).digest()
    return [int(seed), *np.frombuffer(digest[:16], dtype=np.uint32).tolist()]


def draw_targets(candidates: Sequence[Sequence[T]], k: int | None, seed: int, keys: Sequence[str],
                 task: str) -> list[list[T]]:
    """For each image (in order), the targets drawn among its ``candidates`` (sorted by ``target_id``).

    ``keys`` identify the images (content hashes): an image's coin depends on its key, the task and the seed,
    not on its position. ``k=None`` keeps every candidate.
    """
    if len(keys) != len(candidates):
        raise ValueError(f"{len(keys)} image keys for {len(candidates)} images")
    if k is not None and k < 1:
        raise ValueError(f"targets per image must be at least 1 (or None for all), got {k}")
    drawn_n: Counter[int] = Counter()
    seen_n: Counter[int] = Counter()
    out: list[list[T]] = []
    for key, cands in zip(keys, candidates, strict=True):
        cands = sorted(cands, key=lambda t: t.target_id)
        ids = [t.target_id for t in cands]
        if len(set(ids)) != len(ids):
            raise ValueError(f"image {key}: duplicate target ids {ids}")
        seen_n.update(ids)
        if k is None or len(cands) <= k:
            chosen = cands
        else:
            coins = np.random.default_rng(_coin_seed(seed, key, task)).random(len(cands))
            order = sorted(range(len(cands)), key=lambda j: (drawn_n[ids[j]], seen_n[ids[j]], coins[j]))
            chosen = sorted((cands[j] for j in order[:k]), key=lambda t: t.target_id)
        drawn_n.update(t.target_id for t in chosen)
        out.append(list(chosen))
    return out
