"""One loader for every dataset in the MTAN layout: synthetic rooms, NYUv2, Cityscapes.

``MTLDataset(root, "nyuv2", "val", tasks=("segmentation", "normals"))`` yields dict samples:
``image`` float ``(3,H,W)`` in [0,1], ``segmentation`` long ``(H,W)`` (-1 = ignore), ``depth`` float
``(1,H,W)`` (0 = invalid), ``normals`` float ``(3,H,W)`` (all-zero = invalid), plus ``index``.

A task registered by a plugin (``mtlx_core.plugins.register_task``) is selected like a stored one: its target
is derived from the stored labels it names (``Task.sources``, loaded and kept in the sample) by
``Task.derive_target``; ``derive_targets(sample)`` recomputes it after an augmentation of the stored maps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from mtlx_core.data.layout import SPLITS, DatasetSpec, get_dataset_spec

if TYPE_CHECKING:
    from mtlx_core.tasks.base import Task

logger = logging.getLogger(__name__)

Sample = dict[str, torch.Tensor]


class DatasetError(ValueError):
    """A dataset folder that does not follow the MTAN layout; the message names the file."""


def _count(folder: Path) -> int:
    if not folder.is_dir():
        raise DatasetError(f"missing folder {folder}")
    files = sorted(folder.glob("*.npy"))
    idx = sorted(int(f.stem) for f in files if f.stem.isdigit())
    if len(idx) != len(files):
        bad = next(f for f in files if not f.stem.isdigit())
        raise DatasetError(f"unexpected file {bad}: files must be named <i>.npy with i = 0..N-1")
    if idx != list(range(len(idx))):
        missing = sorted(set(range(len(idx))) - set(idx))
        raise DatasetError(f"{folder}: indices are not contiguous from 0 (missing {missing[:5]})")
    return len(idx)


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc


def check_arrays(path_of: dict[str, Path], arrays: dict[str, np.ndarray], spec: DatasetSpec) -> None:
    """Validate one frame's arrays (shapes, dtypes, value ranges); errors name the file."""
    image = arrays["image"]
    if image.ndim != 3 or image.shape[2] != 3 or not np.issubdtype(image.dtype, np.floating):
        raise DatasetError(f"{path_of['image']}: image must be HxWx3 float, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    if not np.isfinite(image).all() or image.min() < -1e-6 or image.max() > 1 + 1e-6:
        raise DatasetError(f"{path_of['image']}: image values must be finite and in [0, 1]")
    shapes = {"segmentation": (h, w), "depth": (h, w, 1), "normals": (h, w, 3)}
    for task, arr in arrays.items():
        if task == "image":
            continue
        if arr.shape != shapes[task]:
            raise DatasetError(f"{path_of[task]}: expected shape {shapes[task]}, got {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise DatasetError(f"{path_of[task]}: expected a numeric array, got dtype {arr.dtype}")
        if np.isnan(arr).any() if np.issubdtype(arr.dtype, np.floating) else False:
            raise DatasetError(f"{path_of[task]}: contains NaN")
    if "segmentation" in arrays:
        lab = arrays["segmentation"]
        if not np.array_equal(lab, np.round(lab)):
            raise DatasetError(f"{path_of['segmentation']}: labels must be integers")
        lo, hi = lab.min(), lab.max()
        if lo < -1 or hi >= spec.num_classes:
            raise DatasetError(f"{path_of['segmentation']}: labels must be in -1..{spec.num_classes - 1} "
                               f"({spec.name}), found {lo:g}..{hi:g}")
    if "depth" in arrays:
        d = arrays["depth"]
        if not np.isfinite(d).all() or d.min() < 0:
            raise DatasetError(f"{path_of['depth']}: depth must be finite and >= 0 (0 = invalid)")
    if "normals" in arrays:
        n = arrays["normals"]
        if not np.isfinite(n).all():
            raise DatasetError(f"{path_of['normals']}: normals must be finite")
        norm = np.linalg.norm(n, axis=2)
        valid = norm > 0
        if valid.any() and np.abs(norm[valid] - 1).max() > 0.05:
            raise DatasetError(f"{path_of['normals']}: normals must be unit vectors or all-zero")


class MTLDataset(Dataset[Sample]):
    """Frames of one split of a dataset in the MTAN layout, restricted to the selected tasks."""

    def __init__(self, root: str | Path, dataset: str | DatasetSpec, split: str, tasks: Sequence[str] | None = None,
                 validate: bool = True) -> None:
        self.spec = dataset if isinstance(dataset, DatasetSpec) else get_dataset_spec(dataset)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder {self.root} does not exist")
        self.split = split
        self.tasks = tuple(self.spec.tasks if tasks is None else tasks)
        #: registered tasks whose targets are derived from stored labels (name -> Task)
        self.derived: dict[str, Task] = {}
        for t in self.tasks:
            if t in self.spec.tasks:
                continue
            from mtlx_core.tasks import build_task  # a registered task; the error lists the valid names

            self.derived[t] = build_task(t, self.spec)
        needed = {*self.tasks, *(s for task in self.derived.values() for s in task.sources)}
        #: the stored labels read from disk (the selected stored tasks and the sources of derived ones)
        self.stored = tuple(t for t in self.spec.tasks if t in needed)
        base = self.root / split
        self.dirs = {"image": base / "image", **{t: base / self.spec.folder(t) for t in self.stored}}
        counts = {k: _count(d) for k, d in self.dirs.items()}
        if len(set(counts.values())) != 1:
            detail = ", ".join(f"{self.dirs[k]}: {n}" for k, n in counts.items())
            raise DatasetError(f"different frame counts across folders ({detail})")
        self.length = counts["image"]
        if self.length == 0:
            raise DatasetError(f"{self.dirs['image']} holds no frames")
        if validate:
            self.read_arrays(0, check=True)
            if self.length > 1:
                self.read_arrays(self.length - 1, check=True)

    def __len__(self) -> int:
        return self.length

    def read_arrays(self, index: int, check: bool = True) -> dict[str, np.ndarray]:
        """The raw arrays of frame ``index`` as stored (validated when ``check``)."""
        paths = {k: d / f"{index}.npy" for k, d in self.dirs.items()}
        arrays = {k: _load(p) for k, p in paths.items()}
        if check:
            check_arrays(paths, arrays, self.spec)
        return arrays

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} frames")
        arrays = self.read_arrays(index, check=True)
        sample: Sample = {"image": torch.from_numpy(np.ascontiguousarray(arrays["image"], np.float32)).permute(2, 0, 1)}
        if "segmentation" in arrays:
            sample["segmentation"] = torch.from_numpy(arrays["segmentation"].astype(np.int64))
        if "depth" in arrays:
            sample["depth"] = torch.from_numpy(np.ascontiguousarray(arrays["depth"], np.float32)).permute(2, 0, 1)
        if "normals" in arrays:
            sample["normals"] = torch.from_numpy(np.ascontiguousarray(arrays["normals"], np.float32)).permute(2, 0, 1)
        sample["index"] = torch.tensor(index)
        return self.derive_targets(sample)

    def derive_targets(self, sample: Sample) -> Sample:
        """``sample`` with the targets of the derived (registered) tasks computed from its stored labels."""
        if not self.derived:
            return sample
        out = dict(sample)
        for name, task in self.derived.items():
            out[name] = task.derive_target({s: sample[s] for s in task.sources})
        return out


def validate_dataset(root: str | Path, dataset: str, tasks: Sequence[str] | None = None) -> dict[str, int]:
    """Check every frame of both splits; returns frame counts per split (an empty split counts 0, but not
    both). Raises ``DatasetError`` naming the first bad file."""
    counts = {}
    for split in SPLITS:
        try:
            ds = MTLDataset(root, dataset, split, tasks, validate=False)
        except DatasetError as exc:
            if "holds no frames" not in str(exc):
                raise
            counts[split] = 0
            continue
        for i in range(len(ds)):
            ds.read_arrays(i, check=True)
        counts[split] = len(ds)
    if not any(counts.values()):
        raise DatasetError(f"{root} holds no frames in any split")
    return counts
