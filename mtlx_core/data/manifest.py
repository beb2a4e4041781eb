"""What identifies a dataset in a run id, wherever the data is mounted (``TrainConfig.fingerprint``).

- ``dataset_manifest(root, dataset)``: a hash of the relative paths and byte sizes of every file under the
  ``train/`` and ``val/`` splits of a dataset folder in the MTAN layout (``mtlx_core.data.layout``), sorted;
  no file is read. The same dataset mounted at ``/data/nyuv2`` or ``/mnt/nyuv2`` has the same manifest; adding,
  removing, renaming or resizing a file changes it. Files and folders whose names start with ``.`` (``.DS_Store``,
  ``._*``) and anything outside the two splits (``meta.json``, ``frames.csv``) are left out. The result is cached
  in-process per (resolved root, modification times of the split folders and of their direct subfolders), so
  repeated ``run_id()`` calls do not walk the folder again; rewriting a file in place, which leaves those folder
  times alone, is only seen by a new process.
- ``synth_identity(synth)``: the identity of a generated synthetic dataset: its request and the generator
  version (``mtlx_core.data.synth.GENERATOR_VERSION``), so a new generator gives new run ids. No file IO.
- ``holds_synth_request(root, synth)``: whether ``root`` holds the synthetic dataset ``generate_synth`` writes
  for that request (its ``meta.json``).

A missing dataset folder (or split) is a ``DatasetError`` naming the folder and the command that converts the
data (``DATA_HINTS``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from mtlx_core.data.layout import SPLITS
from mtlx_core.data.synth import GENERATOR_VERSION

#: how to convert each real dataset into the MTAN layout at ``{root}``
DATA_HINTS: dict[str, str] = {
    "nyuv2": "python -m mtlx_core.data convert-nyuv2 --manifest frames.csv --out {root}",
    "cityscapes": "python -m mtlx_core.data convert-cityscapes --root /path/to/cityscapes --out {root}",
}


def convert_hint(dataset: str, root: str | Path) -> str:
    """The command that writes ``dataset`` into ``root`` (the generic converter CLI for other datasets)."""
    return DATA_HINTS.get(dataset, "python -m mtlx_core.data").format(root=root)


def _missing(folder: Path, dataset: str, root: Path) -> Exception:
    from mtlx_core.data.dataset import DatasetError  # lazily: the dataset loader imports torch

    return DatasetError(f"data folder {folder} does not exist: expected the {dataset} dataset in the MTAN layout "
                        f"at {root} (splits {', '.join(SPLITS)}); convert it with `{convert_hint(dataset, root)}` "
                        "or pass the folder that holds it with --data")


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _stamps(root: Path) -> tuple[tuple[str, int], ...]:
    """Modification times of the split folders and of their direct subfolders (the cache key)."""
    out = []
    for split in SPLITS:
        folder = root / split
        out.append((split, folder.stat().st_mtime_ns))
        with os.scandir(folder) as entries:
            out.extend((f"{split}/{e.name}", e.stat().st_mtime_ns) for e in entries
                       if _visible(e.name) and e.is_dir())
    return tuple(sorted(out))


@functools.lru_cache(maxsize=64)
def _manifest_digest(root: str, stamps: tuple[tuple[str, int], ...]) -> str:
    """sha256 of ``<relative path>\\t<size>`` lines, sorted (``stamps`` only keys the cache)."""
    base = Path(root)
    lines = []
    for split in SPLITS:
        for dirpath, dirnames, filenames in os.walk(base / split, followlinks=True):
            dirnames[:] = [d for d in dirnames if _visible(d)]
            for name in filter(_visible, filenames):
                path = Path(dirpath) / name
                lines.append(f"{path.relative_to(base).as_posix()}\t{path.stat().st_size}\n")
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def dataset_manifest(root: str | Path, dataset: str) -> str:
    """The manifest hash of the dataset folder ``root`` (module docstring); ``DatasetError`` when ``root`` or
    one of its splits is missing."""
    given = Path(root)
    resolved = given.resolve()
    if not resolved.is_dir():
        raise _missing(given, dataset, given)
    for split in SPLITS:
        if not (resolved / split).is_dir():
            raise _missing(given / split, dataset, given)
    return _manifest_digest(str(resolved), _stamps(resolved))


def clear_manifest_cache() -> None:
    """Forget the cached manifests (a dataset rewritten in place within this process)."""
    _manifest_digest.cache_clear()


def synth_identity(synth: dict[str, int]) -> dict[str, Any]:
    """The identity of a generated synthetic dataset: the request and the generator version."""
    return {"synth": dict(sorted(synth.items())), "generator_version": GENERATOR_VERSION}


def holds_synth_request(root: str | Path, synth: dict[str, int]) -> bool:
    """Whether ``root/meta.json`` says the folder holds what ``generate_synth`` writes for ``synth`` with this
    generator (an unreadable or foreign ``meta.json``: no)."""
    try:
        meta = json.loads((Path(root) / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    want = {"dataset": "synth", "generator_version": GENERATOR_VERSION, **synth}
    return isinstance(meta, dict) and all(meta.get(k) == v for k, v in want.items())
