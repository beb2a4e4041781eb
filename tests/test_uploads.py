"""Validation of uploaded images: a clear message for every bad file, documented conversions for odd ones."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mtlx_core.uploads import BUNDLED_PHOTOS, MIN_SIDE, UploadError, bundled_photo, load_image_bytes


def encode(arr: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(buf, format=fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (pixel data absent): decoding would be the attack."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


RGB = (np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)


def test_an_rgb_png_loads_unchanged_as_float_in_unit_range() -> None:
    img = load_image_bytes(encode(RGB), "photo.png")
    assert img.array.shape == (60, 80, 3)
    assert img.array.dtype == np.float32
    np.testing.assert_allclose(img.array, RGB / 255.0, atol=1e-6)
    assert img.notes == ()


@pytest.mark.parametrize(("data", "message"), [
    (b"", "is empty"),
    (b"%PDF-1.4 this is a document, not a picture", "is not an image"),
    (encode(RGB)[:200], "truncated or corrupted"),
    (encode(RGB, "JPEG")[:400], "truncated or corrupted"),
    (png_header_only(100_000, 100_000), "enormous dimensions"),
    (png_header_only(9_000, 9_000), "81.0 megapixels"),
    (png_header_only(20_000, 100), "12000 pixels per side"),
    (encode(RGB[:10, :20]), f"at least {MIN_SIDE} x {MIN_SIDE}"),
])
def test_a_bad_file_raises_upload_error_saying_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(UploadError, match=message):
        load_image_bytes(data, "bad.png")


def test_grayscale_is_repeated_to_rgb_with_a_note() -> None:
    img = load_image_bytes(encode(RGB[..., 0]), "gray.png")
    assert img.original_mode == "L"
    np.testing.assert_allclose(img.array, np.repeat(RGB[..., :1], 3, axis=2) / 255.0, atol=1e-6)
    assert any("grayscale" in n for n in img.notes)


def test_rgba_is_composited_on_white_with_a_note() -> None:
    rgba = np.dstack([RGB, np.zeros(RGB.shape[:2], np.uint8)])  # fully transparent
    rgba[:, :40, 3] = 255  # left half opaque
    img = load_image_bytes(encode(rgba), "alpha.png")
    np.testing.assert_allclose(img.array[:, :40], RGB[:, :40] / 255.0, atol=1e-6)
    assert np.all(img.array[:, 40:] == 1.0)
    assert any("alpha" in n for n in img.notes)


def test_16_bit_grayscale_is_divided_by_65535_with_a_note() -> None:
    gray16 = np.full((40, 50), 65535 // 4, dtype=np.uint16)
    gray16[0, 0] = 65535
    img = load_image_bytes(encode(gray16), "depth16.png")
    assert img.array[1, 1, 0] == pytest.approx((65535 // 4) / 65535)
    assert img.array[0, 0].tolist() == [1.0, 1.0, 1.0]
    assert any("16-bit" in n for n in img.notes)


def test_16_bit_rgb_png_is_reduced_to_8_bits_with_a_note() -> None:
    cv2 = pytest.importorskip("cv2")
    ok, enc = cv2.imencode(".png", (np.arange(40 * 50 * 3).reshape(40, 50, 3) * 10).astype(np.uint16))
    assert ok
    img = load_image_bytes(enc.tobytes(), "rgb16.png")
    assert img.array.shape == (40, 50, 3)
    assert any("16-bit RGB" in n for n in img.notes)


def test_palette_and_cmyk_images_are_converted_to_rgb() -> None:
    pal = Image.fromarray(RGB).convert("P")
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    assert load_image_bytes(buf.getvalue(), "pal.png").array.shape == (60, 80, 3)
    cmyk = Image.fromarray(RGB).convert("CMYK")
    buf = io.BytesIO()
    cmyk.save(buf, format="JPEG")
    img = load_image_bytes(buf.getvalue(), "cmyk.jpg")
    assert img.array.shape == (60, 80, 3)
    assert any("CMYK" in n for n in img.notes)


def test_exif_orientation_is_applied() -> None:
    im = Image.fromarray(RGB)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif)
    assert load_image_bytes(buf.getvalue(), "phone.jpg").array.shape == (80, 60, 3)


@pytest.mark.parametrize("name", BUNDLED_PHOTOS)
def test_every_bundled_photo_loads_as_rgb(name: str) -> None:
    img = bundled_photo(name)
    assert img.array.ndim == 3
    assert img.array.shape[2] == 3
    assert 0.0 <= img.array.min() <= img.array.max() <= 1.0
