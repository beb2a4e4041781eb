"""Shared helpers of the converters: image reading with clear errors, resizing, atomic split-folder writes.

Every reader raises ``FileNotFoundError`` for a missing file and :class:`DataFormatError` (a ``ValueError``)
for a file that exists but is unusable (not an image, truncated, wrong bit depth or channel count); the
message always names the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types (IHDR byte 25) and the channel count each decodes to.
PNG_COLOR_TYPES: dict[int, str] = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}


class DataFormatError(ValueError):
    """A source file exists but its content cannot be converted (the message names the file)."""


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise ``FileNotFoundError`` naming it and what it should hold."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    return path


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a directory, else raise ``FileNotFoundError`` naming it."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {path}")
    return path


def png_header(path: Path) -> tuple[int, int, int, int]:
    """Return ``(width, height, bit_depth, color_type)`` from a PNG's IHDR chunk, without decoding pixels."""
    require_file(path, "PNG")
    with path.open("rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise DataFormatError(f"not a PNG file (bad signature or header): {path}")
    width, height, bit_depth, color_type = struct.unpack(">IIBB", head[16:26])
    return width, height, bit_depth, color_type


def _decode(path: Path, what: str) -> Image.Image:
    """Open and fully decode an image, turning every decoder failure into a clear error."""
    require_file(path, what)
    try:
        img = Image.open(path)
        img.load()
    except Image.DecompressionBombError as e:
        raise DataFormatError(f"{what} image too large to decode: {path} ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise DataFormatError(f"unreadable or truncated {what} image: {path} ({e})") from e
    return img


def read_rgb(path: Path) -> np.ndarray:
    """Read an RGB image (PNG/JPEG; palette, gray and alpha are converted) as ``uint8`` H x W x 3."""
    img = _decode(path, "RGB")
    if img.mode not in ("RGB", "RGBA", "P", "L", "LA", "CMYK", "YCbCr"):
        raise DataFormatError(f"RGB image has unsupported mode {img.mode!r} (8-bit colour expected): {path}")
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_label_png(path: Path) -> np.ndarray:
    """Read a single-channel class-index PNG (8-bit gray/palette indices or 16-bit gray) as ``int64`` H x W."""
    width, height, _, color_type = png_header(path)
    if color_type not in (0, 3):
        raise DataFormatError(
            f"label PNG must be single-channel (gray or palette indices), got {PNG_COLOR_TYPES.get(color_type)}: "
            f"{path}")
    img = _decode(path, "label")
    arr = np.asarray(img)
    if arr.shape != (height, width):
        raise DataFormatError(f"label PNG decoded to shape {arr.shape}, expected {(height, width)}: {path}")
    return arr.astype(np.int64)


def read_uint16_png(path: Path, what: str) -> np.ndarray:
    """Read a 16-bit single-channel PNG (depth in mm, Cityscapes disparity) as ``uint16`` H x W.

    An 8-bit PNG is refused: its values would be silently wrong by a factor of 256 or clipped.
    """
    width, height, bit_depth, color_type = png_header(path)
    if color_type != 0:
        raise DataFormatError(
            f"{what} PNG must be single-channel grayscale, got {PNG_COLOR_TYPES.get(color_type, color_type)}: {path}")
    if bit_depth != 16:
        raise DataFormatError(f"{what} PNG must be 16-bit, got {bit_depth}-bit: {path}")
    img = _decode(path, what)
    arr = np.asarray(img)
    if arr.shape != (height, width):
        raise DataFormatError(f"{what} PNG decoded to shape {arr.shape}, expected {(height, width)}: {path}")
    if arr.dtype != np.uint16:
        if arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
            raise DataFormatError(f"{what} PNG has values outside uint16: {path}")
        arr = arr.astype(np.uint16)
    return arr


def read_rgb8_png(path: Path, what: str) -> np.ndarray:
    """Read an 8-bit RGB(A) PNG as ``uint8`` H x W x 3 (alpha dropped); 16-bit files are refused."""
    _, _, bit_depth, color_type = png_header(path)
    if color_type not in (2, 6):
        raise DataFormatError(f"{what} PNG must be RGB, got {PNG_COLOR_TYPES.get(color_type, color_type)}: {path}")
    if bit_depth != 8:
        raise DataFormatError(f"{what} PNG must be 8 bits per channel, got {bit_depth}-bit: {path}")
    return np.asarray(_decode(path, what).convert("RGB"), dtype=np.uint8)


def check_same_size(ref_path: Path, ref: np.ndarray, path: Path, arr: np.ndarray, what: str) -> None:
    """Raise if ``arr`` (read from ``path``) does not have the height and width of ``ref`` (from ``ref_path``)."""
    if arr.shape[:2] != ref.shape[:2]:
        raise DataFormatError(
            f"{what} size {arr.shape[1]}x{arr.shape[0]} (WxH) differs from the RGB size "
            f"{ref.shape[1]}x{ref.shape[0]} of {ref_path}: {path}")


def resize_nearest(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize with pixel-centre sampling (as PIL's NEAREST); keeps dtype and values exactly."""
    h, w = arr.shape[:2]
    if (h, w) == (height, width):
        return arr.copy()
    rows = np.minimum(((np.arange(height) + 0.5) * (h / height)).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (w / width)).astype(np.int64), w - 1)
    return arr[rows[:, None], cols[None, :]]


def resize_bilinear(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float H x W or H x W x C array, per channel in float32 (PIL's BILINEAR filter,
    which widens its support when shrinking, so downscaling is anti-aliased)."""
    arr = np.asarray(arr, dtype=np.float32)
    if arr.shape[:2] == (height, width):
        return arr.copy()
    if arr.ndim == 2:
        return np.asarray(Image.fromarray(arr).resize((width, height), Image.Resampling.BILINEAR))
    chans = [resize_bilinear(arr[..., c], height, width) for c in range(arr.shape[2])]
    return np.stack(chans, axis=-1)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` via a temp sibling and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output_dir(out: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp sibling folder of ``out``; on success it replaces ``out`` with ``os.replace``.

    On any exception the temp folder is deleted and ``out`` is left as it was. An existing non-empty
    ``out`` raises ``FileExistsError`` unless ``overwrite``; then the old folder is moved aside and deleted
    only after the new one is in place.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path exists and is not a folder: {out}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder exists and is not empty (pass overwrite=True to replace it): {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = out.with_name(f".{out.name}.tmp-{tag}")
    tmp.mkdir()
    try:
        yield tmp
        old = out.with_name(f".{out.name}.old-{tag}")
        moved = out.exists()
        if moved:
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            if moved:
                os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def summarize(meta: dict[str, Any], out: Path) -> dict[str, Any]:
    """The converters' return value: ``meta.json``'s content without the per-frame records (kept in the file)."""
    summary = {k: v for k, v in meta.items() if k != "frames"}
    summary.update(out=str(out), meta_path=str(Path(out) / "meta.json"))
    return summary


def make_split_dirs(root: Path, splits: tuple[str, ...], folders: tuple[str, ...]) -> None:
    """Create ``root/<split>/<folder>`` for every split and folder (empty splits still get their folders)."""
    for split in splits:
        for folder in folders:
            (root / split / folder).mkdir(parents=True, exist_ok=True)


def save_npy(path: Path, arr: np.ndarray) -> None:
    """Save one array as ``.npy`` (inside a temp output folder, so no per-file atomicity is needed)."""
    np.save(path, np.ascontiguousarray(arr), allow_pickle=False)


def progress_iter(items: list[Any], desc: str, enabled: bool) -> Iterator[Any]:
    """Iterate ``items`` with a tqdm bar on stderr when ``enabled`` (and tqdm is importable)."""
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm is a dependency
            logger.debug("tqdm not available; no progress bar")
        else:
            yield from tqdm(items, desc=desc, unit="frame")
            return
    yield from items
