"""Convert Cityscapes from its official folder layout into the MTAN layout (decision D1).

Input (``root``), for ``split`` in train/val (a missing split folder gives an empty split, with a warning)::

    leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png        8-bit RGB                       (required)
    gtFine/<split>/<city>/<frame>_gtFine_labelIds.png         8-bit labelIds 0..33            (required)
    disparity/<split>/<city>/<frame>_disparity.png            uint16, d = (p - 1) / 256, 0 = invalid (optional)
    camera/<split>/<city>/<frame>_camera.json                 extrinsic.baseline, intrinsic.fx   (optional)

Output (``out/``): ``{train,val}/{image,label_7,label_19,depth}/<i>.npy``, frames sorted by name:

- ``image``: float32 H x W x 3 in [0, 1] (bilinear);
- ``label_7``: float32 H x W, Cityscapes category id - 1 (flat .. vehicle = 0..6), void = -1 (nearest);
- ``label_19``: float32 H x W, trainIds 0..18, ignored (255) = -1 (nearest);
- ``depth``: float32 H x W x 1 inverse depth in 1/m, ``d / (baseline * fx)`` with the frame's camera json or the
  standard Cityscapes values, 0 = invalid (nearest); all-zero when the frame has no disparity file;

plus ``meta.json``. The whole folder is written atomically.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mtlx_core.data import io
from mtlx_core.data.io import DataFormatError
from mtlx_core.data.layout import CITYSCAPES7_CLASSES, CITYSCAPES19_CLASSES, SPLITS
from mtlx_core.version import code_version

logger = logging.getLogger(__name__)

DEFAULT_BASELINE_M = 0.209313
DEFAULT_FX_PX = 2262.52
FOLDERS: tuple[str, ...] = ("image", "label_7", "label_19", "depth")
IGNORE_TRAIN_ID = 255


class CsLabel(NamedTuple):
    """One row of the public Cityscapes label table (labelId order)."""

    name: str
    train_id: int  # 255 = ignored in the 19-class benchmark
    category: str
    category_id: int  # 0 = void, 1..7 = flat, construction, object, nature, sky, human, vehicle


# labelId -> label, for labelId 0..33 (license plate, id -1, is never drawn into labelIds images).
CITYSCAPES_LABELS: tuple[CsLabel, ...] = (
    CsLabel("unlabeled", 255, "void", 0),
    CsLabel("ego vehicle", 255, "void", 0),
    CsLabel("rectification border", 255, "void", 0),
    CsLabel("out of roi", 255, "void", 0),
    CsLabel("static", 255, "void", 0),
    CsLabel("dynamic", 255, "void", 0),
    CsLabel("ground", 255, "void", 0),
    CsLabel("road", 0, "flat", 1),
    CsLabel("sidewalk", 1, "flat", 1),
    CsLabel("parking", 255, "flat", 1),
    CsLabel("rail track", 255, "flat", 1),
    CsLabel("building", 2, "construction", 2),
    CsLabel("wall", 3, "construction", 2),
    CsLabel("fence", 4, "construction", 2),
    CsLabel("guard rail", 255, "construction", 2),
    CsLabel("bridge", 255, "construction", 2),
    CsLabel("tunnel", 255, "construction", 2),
    CsLabel("pole", 5, "object", 3),
    CsLabel("polegroup", 255, "object", 3),
    CsLabel("traffic light", 6, "object", 3),
    CsLabel("traffic sign", 7, "object", 3),
    CsLabel("vegetation", 8, "nature", 4),
    CsLabel("terrain", 9, "nature", 4),
    CsLabel("sky", 10, "sky", 5),
    CsLabel("person", 11, "human", 6),
    CsLabel("rider", 12, "human", 6),
    CsLabel("car", 13, "vehicle", 7),
    CsLabel("truck", 14, "vehicle", 7),
    CsLabel("bus", 15, "vehicle", 7),
    CsLabel("caravan", 255, "vehicle", 7),
    CsLabel("trailer", 255, "vehicle", 7),
    CsLabel("train", 16, "vehicle", 7),
    CsLabel("motorcycle", 17, "vehicle", 7),
    CsLabel("bicycle", 18, "vehicle", 7),
)
NUM_LABEL_IDS = len(CITYSCAPES_LABELS)
# Lookup tables labelId -> label_7 / label_19 (-1 = ignore).
LABEL7_LUT = np.array([lb.category_id - 1 for lb in CITYSCAPES_LABELS], dtype=np.int64)
LABEL19_LUT = np.array([-1 if lb.train_id == IGNORE_TRAIN_ID else lb.train_id for lb in CITYSCAPES_LABELS],
                       dtype=np.int64)


class Frame(NamedTuple):
    """One Cityscapes frame: split, city, frame name (``<city>_<seq>_<frame>``) and its files."""

    split: str
    city: str
    name: str
    rgb: Path
    label: Path
    disparity: Path
    camera: Path


def find_frames(root: Path) -> dict[str, list[Frame]]:
    """List the train/val frames under ``root`` sorted by frame name; missing split folders give empty lists."""
    root = Path(root)
    io.require_dir(root, "Cityscapes root")
    io.require_dir(root / "leftImg8bit", "Cityscapes leftImg8bit")
    frames: dict[str, list[Frame]] = {}
    for split in SPLITS:
        split_dir = root / "leftImg8bit" / split
        found: list[Frame] = []
        if not split_dir.is_dir():
            logger.warning("no %s split: folder not found: %s", split, split_dir)
        else:
            for rgb in split_dir.glob("*/*_leftImg8bit.png"):
                city = rgb.parent.name
                name = rgb.name[: -len("_leftImg8bit.png")]
                found.append(Frame(split, city, name, rgb,
                                   root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png",
                                   root / "disparity" / split / city / f"{name}_disparity.png",
                                   root / "camera" / split / city / f"{name}_camera.json"))
        frames[split] = sorted(found, key=lambda fr: fr.name)
    if not any(frames.values()):
        raise FileNotFoundError(f"no *_leftImg8bit.png frames under {root / 'leftImg8bit'}/{{train,val}}/<city>/")
    return frames


def read_camera(path: Path) -> tuple[float, float]:
    """Return ``(baseline_m, fx_px)`` from a Cityscapes camera json, with a clear error for a bad file."""
    try:
        cam = json.loads(path.read_text(encoding="utf-8"))
        baseline, fx = float(cam["extrinsic"]["baseline"]), float(cam["intrinsic"]["fx"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataFormatError(f"camera json lacks a readable extrinsic.baseline / intrinsic.fx ({e}): {path}") from e
    if baseline <= 0 or fx <= 0:
        raise DataFormatError(f"camera json has non-positive baseline {baseline} or fx {fx}: {path}")
    return baseline, fx


def disparity_to_inverse_depth(png: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """Map Cityscapes disparity PNG values to inverse depth in 1/m: ``((p - 1) / 256) / (baseline * fx)``.

    ``p = 0`` (invalid) stays 0.
    """
    p = png.astype(np.float64)
    inv = np.where(p > 0, (p - 1.0) / 256.0 / (baseline * fx), 0.0)
    return inv.astype(np.float32)


def map_label_ids(label_ids: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return (label_7, label_19) int arrays from a labelIds map; values outside 0..33 raise naming ``path``."""
    bad = np.unique(label_ids[(label_ids < 0) | (label_ids >= NUM_LABEL_IDS)])
    if bad.size:
        raise DataFormatError(f"labelIds values out of range 0..{NUM_LABEL_IDS - 1}: found {bad[:10].tolist()} "
                              f"in {path}")
    return LABEL7_LUT[label_ids], LABEL19_LUT[label_ids]


def convert_frame(frame: Frame, height: int, width: int, *, use_camera: bool = True) -> tuple[dict[str, np.ndarray],
                                                                                            dict[str, Any]]:
    """Convert one frame; return its four arrays and its meta record."""
    rgb = io.read_rgb(frame.rgb)
    image = np.clip(io.resize_bilinear(rgb.astype(np.float32) / 255.0, height, width), 0.0, 1.0)
    ids = io.read_label_png(io.require_file(frame.label, "gtFine labelIds"))
    io.check_same_size(frame.rgb, rgb, frame.label, ids, "labelIds")
    label_7, label_19 = (io.resize_nearest(a, height, width) for a in map_label_ids(ids, frame.label))
    record: dict[str, Any] = {"name": frame.name, "city": frame.city, "rgb": str(frame.rgb), "label": str(frame.label),
                              "disparity": None, "camera": None}
    if frame.disparity.is_file():
        disp = io.read_uint16_png(frame.disparity, "disparity")
        io.check_same_size(frame.rgb, rgb, frame.disparity, disp, "disparity")
        baseline, fx = DEFAULT_BASELINE_M, DEFAULT_FX_PX
        if use_camera and frame.camera.is_file():
            baseline, fx = read_camera(frame.camera)
            record["camera"] = str(frame.camera)
        depth = disparity_to_inverse_depth(io.resize_nearest(disp, height, width), baseline, fx)
        record.update(disparity=str(frame.disparity), baseline=baseline, fx=fx)
    else:
        depth = np.zeros((height, width), np.float32)
    arrays = {"image": image.astype(np.float32), "label_7": label_7.astype(np.float32),
              "label_19": label_19.astype(np.float32), "depth": depth[..., None]}
    return arrays, record


def convert_cityscapes(root: Path, out: Path, *, height: int = 128, width: int = 256, progress: bool = True,
                       overwrite: bool = False) -> dict[str, Any]:
    """Convert the Cityscapes tree at ``root`` (layout in the module docstring) into the MTAN layout at ``out``.

    Returns ``meta.json``'s content without the per-frame list, plus ``out`` and ``meta_path``.
    Raises ``FileNotFoundError``/``DataFormatError`` naming the offending file; nothing is left at ``out`` on
    failure. ``overwrite`` replaces an existing non-empty ``out``.
    """
    root = Path(root).resolve()
    out = Path(out)
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    frames = find_frames(root)
    records: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    no_disparity = 0
    no_camera = 0
    with io.atomic_output_dir(out, overwrite=overwrite) as tmp:
        io.make_split_dirs(tmp, SPLITS, FOLDERS)
        todo = [fr for s in SPLITS for fr in frames[s]]
        for frame in io.progress_iter(todo, "convert-cityscapes", progress):
            arrays, record = convert_frame(frame, height, width)
            if record["disparity"] is None:
                if not no_disparity:
                    logger.warning("no disparity file (e.g. %s): depth written as all-zero (invalid)", frame.disparity)
                no_disparity += 1
            elif record["camera"] is None:
                if not no_camera:
                    logger.info("no camera json (e.g. %s): using baseline %.6f m, fx %.2f px", frame.camera,
                                DEFAULT_BASELINE_M, DEFAULT_FX_PX)
                no_camera += 1
            idx = len(records[frame.split])
            for folder, arr in arrays.items():
                io.save_npy(tmp / frame.split / folder / f"{idx}.npy", arr)
            records[frame.split].append({"index": idx, **record})
        counts = {s: len(records[s]) for s in SPLITS}
        meta: dict[str, Any] = {
            "dataset": "cityscapes",
            "layout": "mtan",
            "classes": list(CITYSCAPES7_CLASSES),
            "label_dirs": {"label_7": list(CITYSCAPES7_CLASSES), "label_19": list(CITYSCAPES19_CLASSES)},
            "height": height,
            "width": width,
            "depth_kind": "inverse",
            "depth_unit": "1/m",
            "counts": counts,
            "frames_without_disparity": no_disparity,
            "frames_with_default_camera": no_camera,
            "source": str(root),
            "frames": records,
            "code_version": code_version(),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        io.write_json_atomic(tmp / "meta.json", meta)
    logger.info("converted Cityscapes %s -> %s (train %d, val %d, %d without disparity)", root, out,
                counts["train"], counts["val"], no_disparity)
    return io.summarize(meta, out)
