"""The embedded synthetic RGB-D dataset: ray-cast rooms written in the MTAN NYUv2 layout (decision D1).

``generate_synth`` renders ``n_train`` + ``n_val`` frames (see :mod:`mtlx_core.data.synth_scene` for the scene
model and the camera, depth, normal and label conventions) into ``out/{train,val}/{image,label,depth,normal}``
plus ``out/meta.json``. Frame i of a split is rendered from its own RNG seeded by (seed, split, i), so any
frame can be re-rendered alone. Writing goes through the sibling folder ``<out>.partial``: frames already
there are kept (an interrupted run resumes), and the folder is renamed to ``out`` when complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mtlx_core.data.layout import SPLITS, SYNTH_CLASSES
from mtlx_core.data.synth_scene import camera_intrinsics, render_frame
from mtlx_core.version import code_version

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "4"
FOLDERS: tuple[str, ...] = ("image", "label", "depth", "normal")
# Fields that fix the content of frame i (a partial folder with the same ones can be resumed) ...
_FRAME_KEYS = ("dataset", "generator_version", "seed", "height", "width")
# ... and those that fix the whole dataset (an existing ``out`` must match them).
_REQUEST_KEYS = (*_FRAME_KEYS, "n_train", "n_val")
CONVENTIONS = {
    "pixel": "(u, v) = (column, row) index; a pixel with depth Z back-projects to "
             "X = (u - cx) * Z / fx, Y = (v - cy) * Z / fy",
    "camera_frame": "x right, y down, z forward",
    "depth": "camera z of the surface in metres (not the ray length); 0 = invalid",
    "normal": "unit surface normal in camera coordinates, pointing toward the camera; all-zero = invalid",
    "label": "index into classes; -1 = ignore (window glass, which also has no depth and no normal)",
}


def frame_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The RNG of frame ``index`` of ``split``: independent of every other frame."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def render_synth_frame(seed: int, split: str, index: int, height: int = 96, width: int = 128
                       ) -> dict[str, np.ndarray]:
    """Render frame ``index`` of ``split`` exactly as :func:`generate_synth` stores it."""
    return render_frame(frame_rng(seed, split, index), height, width)


def synth_meta(n_train: int, n_val: int, height: int, width: int, seed: int) -> dict[str, Any]:
    """The meta.json of a synthetic dataset (without its summary)."""
    k = camera_intrinsics(height, width)
    return {
        "dataset": "synth", "classes": list(SYNTH_CLASSES), "ignore_label": -1,
        "intrinsics": {"fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy}, "conventions": CONVENTIONS,
        "seed": seed, "height": height, "width": width, "n_train": n_train, "n_val": n_val,
        "generator_version": GENERATOR_VERSION, "code_version": code_version(),
    }


class _Stats:
    """Running per-split statistics: class pixel counts, ignore share, valid depth range and mean."""

    def __init__(self, num_classes: int) -> None:
        self.frames, self.pixels, self.invalid, self.depth_sum = 0, 0, 0, 0.0
        self.counts = np.zeros(num_classes + 1, np.int64)  # index 0 = ignore
        self.dmin, self.dmax = np.inf, -np.inf

    def add(self, label: np.ndarray, depth: np.ndarray) -> None:
        lab = label.astype(np.int64).ravel() + 1
        self.counts += np.bincount(np.clip(lab, 0, len(self.counts) - 1), minlength=len(self.counts))
        valid = depth[depth > 0]
        self.frames, self.pixels, self.invalid = self.frames + 1, self.pixels + lab.size, \
            self.invalid + lab.size - valid.size
        if valid.size:
            self.dmin, self.dmax = min(self.dmin, float(valid.min())), max(self.dmax, float(valid.max()))
            self.depth_sum += float(valid.sum(dtype=np.float64))

    def summary(self, classes: Sequence[str]) -> dict[str, Any]:
        px = max(self.pixels, 1)
        valid = self.pixels - self.invalid
        return {
            "frames": self.frames,
            "class_share": {c: float(self.counts[i + 1] / px) for i, c in enumerate(classes)},
            "ignore_share": float(self.counts[0] / px), "invalid_depth_share": float(self.invalid / px),
            "depth_min": float(self.dmin) if valid else None, "depth_max": float(self.dmax) if valid else None,
            "depth_mean": self.depth_sum / valid if valid else None,
        }


def _summary(meta: dict[str, Any], stats: dict[str, _Stats], root: Path) -> dict[str, Any]:
    classes = meta.get("classes", list(SYNTH_CLASSES))
    splits = {s: st.summary(classes) for s, st in stats.items()}
    pixels = sum(st.pixels for st in stats.values())
    mins = [v["depth_min"] for v in splits.values() if v["depth_min"] is not None]
    maxs = [v["depth_max"] for v in splits.values() if v["depth_max"] is not None]
    return {
        "root": str(root), "dataset": meta.get("dataset"), "height": meta.get("height"), "width": meta.get("width"),
        "counts": {s: st.frames for s, st in stats.items()}, "splits": splits,
        "depth_range": [min(mins), max(maxs)] if mins else None,
        "invalid_depth_share": sum(st.invalid for st in stats.values()) / max(pixels, 1),
        "ignore_share": sum(int(st.counts[0]) for st in stats.values()) / max(pixels, 1),
    }


def summarize_dataset(root: Path, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Statistics of a dataset in the D1 layout (labels in ``label/``), read back from its .npy files."""
    root = Path(root)
    meta = _read_json(root / "meta.json") if (root / "meta.json").is_file() else {}
    if classes is not None:
        meta["classes"] = list(classes)
    stats = {}
    for split in SPLITS:
        st = stats[split] = _Stats(len(meta.get("classes", SYNTH_CLASSES)))
        for i in range(_count_frames(root / split)):
            st.add(np.load(root / split / "label" / f"{i}.npy"), np.load(root / split / "depth" / f"{i}.npy"))
    return _summary(meta, stats, root)


def _count_frames(split_dir: Path) -> int:
    """Number of frames of a split folder, checking that every folder holds exactly ``0..N-1``."""
    sets = {}
    for f in FOLDERS:
        d = split_dir / f
        sets[f] = {p.name for p in d.glob("*.npy")} if d.is_dir() else set()
    n = len(sets["image"])
    expected = {f"{i}.npy" for i in range(n)}
    for f, names in sets.items():
        if names != expected:
            raise ValueError(f"{split_dir / f}: expected the files 0.npy..{n - 1}.npy like image/, "
                             f"found {len(names)} files")
    return n


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def _save(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    os.replace(tmp, path)


def _differences(have: dict[str, Any], want: dict[str, Any], keys: Sequence[str]) -> list[str]:
    return [f"{k}: {have.get(k)!r} there, {want[k]!r} requested" for k in keys if have.get(k) != want[k]]


def _existing(out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Summary of an existing ``out`` that holds the requested dataset; a clear error otherwise."""
    if not (out / "meta.json").is_file():
        raise FileExistsError(f"{out} exists but has no meta.json: not a synthetic dataset; remove it or pick "
                              "another output folder")
    have = _read_json(out / "meta.json")
    diff = _differences(have, meta, _REQUEST_KEYS)
    if diff:
        raise FileExistsError(f"{out} already holds a different dataset ({'; '.join(diff)}); remove it or pick "
                              "another output folder")
    for split in SPLITS:
        n = _count_frames(out / split)
        if n != meta[f"n_{split}"]:
            raise ValueError(f"{out / split}: {n} frames, meta.json says {meta[f'n_{split}']}")
    summary = have.get("summary") or summarize_dataset(out)
    logger.info("%s already holds the requested synthetic dataset; nothing to do", out)
    return {**summary, "root": str(out), "created": False, "frames_rendered": 0, "frames_resumed": 0}


def _prepare_partial(partial: Path, meta: dict[str, Any]) -> None:
    """Make ``partial`` ready to (re)fill: keep it when its frames fit the request, else start it afresh."""
    if partial.exists():
        if (partial / "meta.json").is_file():
            diff = _differences(_read_json(partial / "meta.json"), meta, _FRAME_KEYS)
            if diff:
                logger.warning("discarding %s, left by an interrupted run with other settings (%s)", partial,
                               "; ".join(diff))
                shutil.rmtree(partial)
        elif any(partial.iterdir()):
            raise FileExistsError(f"{partial} exists and is not a partial synthetic dataset (no meta.json); "
                                  "remove it")
    for split in SPLITS:
        for f in FOLDERS:
            (partial / split / f).mkdir(parents=True, exist_ok=True)
            for stale in (partial / split / f).glob("*.tmp"):
                stale.unlink()
    _write_json(partial / "meta.json", meta)


def _drop_extra(split_dir: Path, n: int) -> None:
    """Remove frames ``>= n`` (left by an earlier, larger request with the same seed)."""
    for f in FOLDERS:
        for p in (split_dir / f).glob("*.npy"):
            if not p.stem.isdigit() or int(p.stem) >= n:
                p.unlink()


def _check(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def generate_synth(out: Path, n_train: int, n_val: int, height: int = 96, width: int = 128, seed: int = 0,
                   progress: bool = True) -> dict[str, Any]:
    """Write the synthetic dataset into ``out`` (atomic, resumable) and return its summary.

    If ``out`` already holds the same request it is left alone and its summary returned; if it holds
    anything else a ``FileExistsError`` says what differs. The summary has the frame counts, the size,
    per-split class pixel shares, ignore and invalid-depth shares and the valid depth range, plus
    ``created``, ``frames_rendered`` and ``frames_resumed``.
    """
    for name, value, low in (("n_train", n_train, 1), ("n_val", n_val, 0), ("height", height, 8),
                             ("width", width, 8), ("seed", seed, 0)):
        _check(name, value, low)
    n_train, n_val, height, width, seed = int(n_train), int(n_val), int(height), int(width), int(seed)
    out = Path(out)
    meta = synth_meta(n_train, n_val, height, width, seed)
    if out.exists():
        return _existing(out, meta)
    partial = out.with_name(out.name + ".partial")
    _prepare_partial(partial, meta)
    counts = {"train": n_train, "val": n_val}
    stats = {s: _Stats(len(SYNTH_CLASSES)) for s in SPLITS}
    rendered = resumed = 0
    with tqdm(total=n_train + n_val, disable=not progress, unit="frame", desc=f"synth {out.name}") as bar:
        for split in SPLITS:
            d = partial / split
            _drop_extra(d, counts[split])
            names = [{p.name for p in (d / f).glob("*.npy")} for f in FOLDERS]
            for i in range(counts[split]):
                name = f"{i}.npy"
                if all(name in s for s in names):
                    stats[split].add(np.load(d / "label" / name), np.load(d / "depth" / name))
                    resumed += 1
                else:
                    frame = render_synth_frame(seed, split, i, height, width)
                    for f in FOLDERS:
                        _save(d / f / name, frame[f])
                    stats[split].add(frame["label"], frame["depth"])
                    rendered += 1
                bar.update()
    summary = _summary(meta, stats, out)
    _write_json(partial / "meta.json", {**meta, "summary": summary})
    os.replace(partial, out)
    logger.info("wrote %d synthetic frames to %s (%d rendered, %d resumed)", n_train + n_val, out, rendered,
                resumed)
    return {**summary, "created": True, "frames_rendered": rendered, "frames_resumed": resumed}
