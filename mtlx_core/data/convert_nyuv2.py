"""Convert NYUv2 frames listed in a CSV manifest into the MTAN layout (decision D1).

Manifest format (CSV with a header row; extra columns are ignored; paths are relative to the manifest's
folder unless absolute):

=========  ========  ==================================================================================
column     required  content
=========  ========  ==================================================================================
split      yes       ``train`` or ``val``; ``test`` is accepted and written to ``val`` (MTAN calls NYUv2's
                     official test split "val")
rgb        yes       8-bit colour image (PNG or JPEG)
depth      no        uint16 single-channel PNG in millimetres, 0 = invalid; empty/absent -> all-zero depth
label      no        8-bit single-channel PNG with 0 = unlabeled, 1..13 = the 13 classes in
                     ``layout.NYUV2_CLASSES`` order; empty/absent -> all ``-1`` (ignore)
normal     no        8-bit RGB PNG encoding unit normals as ``(n + 1) / 2 * 255``; empty/absent -> all-zero
                     (invalid). A decoded vector whose length is outside [0.5, 1.5] (e.g. a black or mid-grey
                     pixel) is invalid and written as zero.
=========  ========  ==================================================================================

Example::

    split,rgb,depth,label,normal
    train,rgb/0001.png,depth/0001.png,label13/0001.png,normal/0001.png
    test,rgb/0002.jpg,depth/0002.png,label13/0002.png,

The shared sample's ``frames.csv`` (columns ``rgb,depth_mm_uint16,seg13,normal_uint8``) is accepted as is.
In that "sample" dialect, rows without a label or with a split other than train/val/test are skipped with a
logged reason; in the native dialect a missing label gives an all-ignore map and an unknown split is an error.

Output (``out/``): ``{train,val}/{image,label,depth,normal}/<i>.npy`` with ``image`` float32 H x W x 3 in [0, 1]
(bilinear resize), ``label`` float32 H x W in ``-1..12`` (nearest), ``depth`` float32 H x W x 1 in metres
(nearest, 0 = invalid), ``normal`` float32 H x W x 3 (bilinear, re-normalised; zero stays zero), plus
``meta.json``. The whole folder is written atomically.
"""

from __future__ import annotations

import csv
import datetime as _dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtlx_core.data import io
from mtlx_core.data.io import DataFormatError
from mtlx_core.data.layout import NYUV2_CLASSES, SPLITS
from mtlx_core.version import code_version

logger = logging.getLogger(__name__)

SPLIT_ALIASES: dict[str, str] = {"train": "train", "val": "val", "test": "val"}
SAMPLE_COLUMNS: dict[str, str] = {"depth_mm_uint16": "depth", "seg13": "label", "normal_uint8": "normal"}
FOLDERS: tuple[str, ...] = ("image", "label", "depth", "normal")
NUM_CLASSES = len(NYUV2_CLASSES)


@dataclass(frozen=True)
class ManifestRow:
    """One frame of the manifest: its CSV line number, target split and (relative) source paths."""

    line: int
    split: str
    rgb: str
    depth: str
    label: str
    normal: str


def read_manifest(manifest: Path) -> tuple[list[ManifestRow], list[dict[str, Any]]]:
    """Parse ``manifest``; return the rows to convert and the skipped rows (each with a reason)."""
    manifest = io.require_file(Path(manifest), "manifest")
    with manifest.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        records = [{(k or "").strip(): (v or "").strip() for k, v in rec.items()} for rec in reader]
    for col in ("split", "rgb"):
        if col not in header:
            raise DataFormatError(f"manifest lacks the required column {col!r} (has {header}): {manifest}")
    sample = any(c in header for c in SAMPLE_COLUMNS)
    for alias, native in SAMPLE_COLUMNS.items():
        if alias in header and native in header:
            raise DataFormatError(f"manifest has both {alias!r} and {native!r} columns; keep one: {manifest}")
    rows: list[ManifestRow] = []
    skipped: list[dict[str, Any]] = []
    for line, rec in enumerate(records, start=2):
        vals = {SAMPLE_COLUMNS.get(k, k): v for k, v in rec.items()}
        split_raw = vals.get("split", "")
        split = SPLIT_ALIASES.get(split_raw.lower())
        reason = ""
        if not vals.get("rgb"):
            reason = "no rgb path"
        elif split is None:
            reason = f"split {split_raw!r} is not train/val/test"
        elif sample and not vals.get("label"):
            reason = "no label (sample manifest dialect)"
        if reason:
            if not sample:
                raise DataFormatError(f"manifest line {line}: {reason}: {manifest}")
            logger.info("skipping manifest line %d (%s): %s", line, vals.get("rgb", ""), reason)
            skipped.append({"line": line, "rgb": vals.get("rgb", ""), "reason": reason})
            continue
        assert split is not None
        rows.append(ManifestRow(line, split, vals["rgb"], vals.get("depth", ""), vals.get("label", ""),
                                vals.get("normal", "")))
    if not rows:
        raise DataFormatError(f"manifest lists no convertible frame ({len(skipped)} skipped): {manifest}")
    return rows, skipped


def _resolve(base: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else base / p


def decode_normals(png: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``uint8`` normals ``(n + 1) / 2 * 255`` into float32 vectors and a validity mask."""
    n = png.astype(np.float32) / 255.0 * 2.0 - 1.0
    length = np.linalg.norm(n, axis=-1)
    valid = (length >= 0.5) & (length <= 1.5)
    n[~valid] = 0.0
    return n, valid


def resize_normals(n: np.ndarray, valid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear-resize normals, re-normalise, and zero the pixels whose nearest source pixel is invalid."""
    r = io.resize_bilinear(n, height, width)
    keep = io.resize_nearest(valid, height, width)
    length = np.linalg.norm(r, axis=-1, keepdims=True)
    keep &= length[..., 0] > 1e-6
    out = np.where(keep[..., None], r / np.maximum(length, 1e-12), 0.0)
    return out.astype(np.float32)


def convert_frame(row: ManifestRow, base: Path, height: int, width: int) -> dict[str, np.ndarray]:
    """Read one manifest row's files and return the four MTAN arrays at ``height x width``."""
    rgb_path = _resolve(base, row.rgb)
    rgb = io.read_rgb(rgb_path)
    image = np.clip(io.resize_bilinear(rgb.astype(np.float32) / 255.0, height, width), 0.0, 1.0)

    if row.depth:
        path = _resolve(base, row.depth)
        d = io.read_uint16_png(path, "depth")
        io.check_same_size(rgb_path, rgb, path, d, "depth")
        depth = io.resize_nearest(d, height, width).astype(np.float32) / np.float32(1000.0)
    else:
        depth = np.zeros((height, width), np.float32)

    if row.label:
        path = _resolve(base, row.label)
        lab = io.read_label_png(path)
        io.check_same_size(rgb_path, rgb, path, lab, "label")
        bad = np.unique(lab[(lab < 0) | (lab > NUM_CLASSES)])
        if bad.size:
            raise DataFormatError(f"label values out of range 0..{NUM_CLASSES} (0 = unlabeled): found "
                                  f"{bad[:10].tolist()} in {path}")
        label = (io.resize_nearest(lab, height, width) - 1).astype(np.float32)
    else:
        label = np.full((height, width), -1.0, np.float32)

    if row.normal:
        path = _resolve(base, row.normal)
        png = io.read_rgb8_png(path, "normal")
        io.check_same_size(rgb_path, rgb, path, png, "normal")
        normal = resize_normals(*decode_normals(png), height, width)
    else:
        normal = np.zeros((height, width, 3), np.float32)

    return {"image": image.astype(np.float32), "label": label, "depth": depth[..., None], "normal": normal}


def convert_nyuv2(manifest: Path, out: Path, *, height: int = 288, width: int = 384, progress: bool = True,
                  overwrite: bool = False) -> dict[str, Any]:
    """Convert the frames of ``manifest`` (format in the module docstring) into the MTAN layout at ``out``.

    Returns ``meta.json``'s content (counts per split, skipped rows, ...) without the per-frame source list,
    plus ``out`` and ``meta_path``.
    Raises ``FileNotFoundError``/``DataFormatError`` naming the offending file; nothing is left at ``out``
    on failure. ``overwrite`` replaces an existing non-empty ``out``.
    """
    manifest = Path(manifest).resolve()
    out = Path(out)
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    rows, skipped = read_manifest(manifest)
    base = manifest.parent
    frames: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    with io.atomic_output_dir(out, overwrite=overwrite) as tmp:
        io.make_split_dirs(tmp, SPLITS, FOLDERS)
        for row in io.progress_iter(rows, "convert-nyuv2", progress):
            arrays = convert_frame(row, base, height, width)
            idx = len(frames[row.split])
            for folder, arr in arrays.items():
                io.save_npy(tmp / row.split / folder / f"{idx}.npy", arr)
            frames[row.split].append({"index": idx, "line": row.line, "rgb": row.rgb, "depth": row.depth,
                                      "label": row.label, "normal": row.normal})
        counts = {s: len(frames[s]) for s in SPLITS}
        for s in SPLITS:
            if not counts[s]:
                logger.warning("split %r is empty in %s", s, manifest)
        meta: dict[str, Any] = {
            "dataset": "nyuv2",
            "layout": "mtan",
            "classes": list(NYUV2_CLASSES),
            "label_dirs": {"label": list(NYUV2_CLASSES)},
            "height": height,
            "width": width,
            "depth_kind": "metric",
            "depth_unit": "m",
            "counts": counts,
            "source": str(manifest),
            "frames": frames,
            "skipped": skipped,
            "code_version": code_version(),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        io.write_json_atomic(tmp / "meta.json", meta)
    logger.info("converted NYUv2 manifest %s -> %s (train %d, val %d, skipped %d)", manifest, out,
                counts["train"], counts["val"], len(skipped))
    return io.summarize(meta, out)
