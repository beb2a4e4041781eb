"""Deterministic batches: the frames and augmentation of iteration ``it`` depend only on (seed, it).

That makes a resumed run identical to an uninterrupted one, with or without loader workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mtlx_core.data.dataset import MTLDataset, Sample

_MIX = 1_000_003


def batch_indices(n: int, batch_size: int, seed: int, iteration: int) -> list[int]:
    """Frame indices of ``iteration``: epochs are seeded permutations, the last partial batch is dropped."""
    if n <= 0:
        raise ValueError("empty dataset")
    if batch_size > n:
        raise ValueError(f"batch size {batch_size} is larger than the training split ({n} frames)")
    per_epoch = n // batch_size
    epoch, k = divmod(iteration, per_epoch)
    g = torch.Generator().manual_seed(seed * _MIX + epoch)
    perm = torch.randperm(n, generator=g)
    return perm[k * batch_size:(k + 1) * batch_size].tolist()


class IterationSampler(Sampler[list[tuple[int, int]]]):
    """Yields, for iterations ``start..stop-1``, lists of ``(frame index, augmentation seed)``."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int) -> None:
        self.n, self.batch_size, self.seed, self.start, self.stop = n, batch_size, seed, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for it in range(self.start, self.stop):
            idx = batch_indices(self.n, self.batch_size, self.seed, it)
            yield [(i, (self.seed * _MIX + it) * 64 + slot) for slot, i in enumerate(idx)]


class SeededFrames(Dataset[Sample]):
    """Wraps a dataset so that ``ds[(i, s)]`` augments frame ``i`` with a generator seeded by ``s``."""

    def __init__(self, base: MTLDataset, augment: Callable[[Sample, torch.Generator], Sample] | None) -> None:
        self.base = base
        self.augment = augment

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> Sample:
        index, aug_seed = key
        sample = self.base[index]
        if self.augment is not None:
            g = torch.Generator().manual_seed(aug_seed)
            sample = self.base.derive_targets(self.augment(sample, g))  # plugin tasks: from the augmented labels
        return sample


def collate(samples: list[Sample]) -> Sample:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def training_batches(base: MTLDataset, batch_size: int, seed: int, start: int, stop: int,
                     augment: Callable[[Sample, torch.Generator], Sample] | None,
                     num_workers: int = 0) -> DataLoader:
    """A loader over iterations ``start..stop-1`` whose content does not depend on ``num_workers``."""
    sampler = IterationSampler(len(base), batch_size, seed, start, stop)
    return DataLoader(SeededFrames(base, augment), batch_sampler=sampler, collate_fn=collate,
                      num_workers=num_workers, generator=torch.Generator().manual_seed(seed))


def eval_batches(ds: MTLDataset, batch_size: int) -> DataLoader:
    """In order; with its own generator, so that an evaluation does not draw from the global random stream
    (a DataLoader draws its base seed from it otherwise, which would move dropout masks of later training
    steps: periodic evaluation must not change the trained weights, ``eval_every`` is not in the run id)."""
    return DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate, generator=torch.Generator())
