"""Arrays in the store: ``.npy`` bytes (self-describing dtype and shape), PNG images, content hashes."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # the read path (mtlx_core.store.query) must not import torch
    import torch


def encode_array(arr: np.ndarray) -> bytes:
    """``.npy`` bytes of ``arr`` (no pickles)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def decode_array(blob: bytes) -> np.ndarray:
    """The array stored by :func:`encode_array`; a clear error for anything else."""
    try:
        return np.load(io.BytesIO(blob), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"stored array is corrupted: {exc}") from exc


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an HxWx3 float image in [0, 1] (or uint8)."""
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def decode_png(blob: bytes) -> np.ndarray:
    """HxWx3 uint8 array of PNG bytes."""
    with Image.open(io.BytesIO(blob)) as im:
        return np.asarray(im.convert("RGB"))


def array_hash(arr: np.ndarray) -> str:
    """Content address of an array (dtype, shape and bytes): 16 hex digits of SHA-256."""
    h = hashlib.sha256()
    h.update(str(arr.dtype).encode())
    h.update(str(arr.shape).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def state_hash(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a checkpoint's tensors (names, dtypes, shapes, bytes in key order): its content address.

    Not of the ``model.pt`` file: ``torch.save`` embeds the (temporary) file name in the archive, so two
    identical trainings write different bytes.
    """
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch_uint8()).numpy().tobytes())
    return h.hexdigest()


def torch_uint8() -> torch.dtype:
    import torch

    return torch.uint8
