"""Reading images uploaded to the app: validation with a clear message for every bad file, documented conversions.

Public API::

    img = load_image_bytes(data, name)        # -> LoadedImage; raises UploadError with a message for the user
    img.array                                 # H x W x 3 float32 RGB in [0, 1]
    img.notes                                 # what was converted (grayscale, alpha, 16-bit, ...)
    bundled_photo("astronaut")                # scikit-image's sample photos, through the same path

Refused (``UploadError``): empty files, files over ``MAX_BYTES``, anything Pillow cannot identify as an image,
truncated or corrupted files, images with more than ``MAX_PIXELS`` pixels or a side over ``MAX_SIDE`` (checked
from the header, before decoding), and images with a side under ``MIN_SIDE``.

Converted (with a note): grayscale and bilevel (channel repeated), palette, CMYK / YCbCr / LAB / HSV (to RGB),
alpha channels (composited on white, what a viewer shows), 16-bit integer images (divided by 65535; 16-bit RGB
PNGs are reduced to their high byte by Pillow), 32-bit integer / float grayscale (min-max scaled), multi-frame
files (first frame), EXIF orientation (applied).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

#: the upload limit, the one number: the Live page's text and uploader, Streamlit's ``server.maxUploadSize`` (set
#: from it by ``python -m mtlx_core.demo``; ``.streamlit/config.toml`` repeats it, ``tests/test_house_rules.py``
#: checks they agree) and the check below. Streamlit's "MB" is 2**20 bytes.
MAX_UPLOAD_MB = 30
MAX_BYTES = MAX_UPLOAD_MB * 2**20
MAX_PIXELS = 40_000_000
MAX_SIDE = 12_000
MIN_SIDE = 32
FORMATS = "PNG, JPEG, BMP, GIF, TIFF or WebP"


class UploadError(ValueError):
    """An upload that cannot be used; the message is meant for the user."""


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A validated image: ``array`` ``(H, W, 3)`` float32 RGB in [0, 1]."""

    name: str
    array: np.ndarray
    notes: tuple[str, ...]
    original_mode: str
    original_size: tuple[int, int]  # (width, height)

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    @property
    def width(self) -> int:
        return int(self.array.shape[1])


def _open(data: bytes, name: str) -> ImageFile.ImageFile:
    if not data:
        raise UploadError(f"{name} is empty (0 bytes)")
    if len(data) > MAX_BYTES:
        raise UploadError(f"{name} is {len(data) / 2**20:.1f} MiB; the limit is {MAX_BYTES // 2**20} MiB")
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UploadError(f"{name} is not an image this app can read (expected {FORMATS})") from None
    except Image.DecompressionBombError as exc:
        raise UploadError(f"{name} has enormous dimensions ({exc}); the limit is {MAX_PIXELS / 1e6:.0f} "
                          "megapixels") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UploadError(f"{name} is truncated or corrupted and cannot be read ({exc})") from None


def _check_size(im: Image.Image, name: str) -> None:
    w, h = im.size
    if w * h > MAX_PIXELS or max(w, h) > MAX_SIDE:
        raise UploadError(f"{name} is {w} x {h} pixels ({w * h / 1e6:.1f} megapixels); the limit is "
                          f"{MAX_PIXELS / 1e6:.0f} megapixels and {MAX_SIDE} pixels per side: downscale it first")
    if min(w, h) < MIN_SIDE:
        raise UploadError(f"{name} is only {w} x {h} pixels; explanations need at least {MIN_SIDE} x {MIN_SIDE}")


def _decode(im: Image.Image, name: str) -> Image.Image:
    try:
        im.load()
        return ImageOps.exif_transpose(im) or im
    except Image.DecompressionBombError as exc:
        raise UploadError(f"{name} has enormous dimensions ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UploadError(f"{name} is truncated or corrupted and cannot be decoded ({exc})") from None


def _on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_rgb(im: Image.Image) -> tuple[np.ndarray, list[str]]:
    """``(H, W, 3)`` float32 in [0, 1] and the conversions made."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.float32) / 255.0, []
    if mode in ("I;16", "I;16L", "I;16B", "I;16N") or (mode == "I" and np.asarray(im).max(initial=0) <= 65535):
        arr = np.asarray(im).astype(np.float32) / 65535.0
        note = "16-bit grayscale: divided by 65535 and repeated to RGB"
        return np.repeat(np.clip(arr, 0, 1)[..., None], 3, axis=2), [note]
    if mode in ("I", "F"):
        arr = np.asarray(im).astype(np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        note = f"{'32-bit float' if mode == 'F' else '32-bit integer'} grayscale: min-max scaled, repeated to RGB"
        return np.repeat(arr.astype(np.float32)[..., None], 3, axis=2), [note]
    if mode in ("L", "1"):
        what = "black-and-white" if mode == "1" else "grayscale"
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0, [f"{what} image: channel repeated to RGB"]
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in im.info):
        arr = np.asarray(_on_white(im), dtype=np.float32) / 255.0
        return arr, ["alpha channel removed: transparent pixels composited on white"]
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0, [f"{mode} image converted to RGB"]


def load_image_bytes(data: bytes, name: str = "the upload") -> LoadedImage:
    """Validate and decode an uploaded file; ``UploadError`` says what is wrong with it."""
    im = _open(data, name)
    with im:
        _check_size(im, name)
        notes: list[str] = []
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            notes.append(f"{frames} frames: the first one is used")
        rawmode = im.tile[0][3] if im.tile and isinstance(im.tile[0][3], str) else ""
        if im.format == "PNG" and "16" in rawmode and im.mode == "RGB":
            notes.append("16-bit RGB: reduced to 8 bits per channel")
        mode = im.mode
        decoded = _decode(im, name)
        arr, conversions = _to_rgb(decoded)
    if not np.isfinite(arr).all():
        raise UploadError(f"{name} contains non-finite pixel values")
    notes += conversions
    if notes:
        logger.info("%s: %s", name, "; ".join(notes))
    return LoadedImage(name, np.ascontiguousarray(arr, dtype=np.float32), tuple(notes), mode,
                       (arr.shape[1], arr.shape[0]))


def _photos() -> dict[str, Callable[[], np.ndarray]]:
    from skimage import data

    return {"astronaut": data.astronaut, "coffee": data.coffee, "chelsea (cat)": data.chelsea,
            "rocket": data.rocket, "camera (grayscale)": data.camera}


BUNDLED_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "chelsea (cat)", "rocket", "camera (grayscale)")


def bundled_photo(name: str) -> LoadedImage:
    """One of scikit-image's sample photos (shipped with the package), read like an upload."""
    photos = _photos()
    if name not in photos:
        raise ValueError(f"unknown bundled photo {name!r}; valid photos: {', '.join(photos)}")
    buf = io.BytesIO()
    Image.fromarray(photos[name]()).save(buf, format="PNG")
    return load_image_bytes(buf.getvalue(), name)
