"""Hand-built multi-task models for the explanation tests (Grad-CAM, IROF, Quantus agreement).

- ``RegionModel``: every output depends on the input only through one square region ``R`` (its layer
  ``gate`` is zero outside ``R``), so the right answer of Grad-CAM and IROF is known.
- ``TinyMTL``: a small smooth multi-task CNN (conv-BN-ReLU, max-pool, bilinear upsampling, no max-unpool)
  whose outputs are O(1), so float rounding is never amplified; used to compare with reference libraries.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtlx_core.data.layout import SYNTH_CLASSES
from mtlx_core.tasks import DepthTask, NormalsTask, SegmentationTask

REAL_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "nyuv2-sample" / "densedepth_examples"


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """One intra-op thread: on a shared, overloaded CPU two OpenMP threads make small convs ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tasks_for(n_classes: int = 5) -> dict[str, object]:
    return {"segmentation": SegmentationTask(SYNTH_CLASSES[:n_classes]), "depth": DepthTask(),
            "normals": NormalsTask()}


class Gate(nn.Module):
    """Multiplies features by a fixed spatial mask."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


class RegionModel(nn.Module):
    """Outputs depend only on the redness of region ``R`` = rows/cols ``[r0, r1)`` of the input."""

    def __init__(self, size: tuple[int, int] = (32, 32), region: tuple[int, int, int, int] = (4, 12, 4, 12),
                 n_classes: int = 5) -> None:
        super().__init__()
        h, w = size
        mask = torch.zeros(h, w)
        mask[region[0]:region[1], region[2]:region[3]] = 1.0
        self.redness = nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.redness.weight.copy_(torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1))
        self.gate = Gate(mask)
        self.area = float(mask.sum())
        self.n_classes = n_classes
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        self.register_buffer("ramp", (yy + xx) / 2)
        self.register_buffer("field", torch.stack([xx - 0.5, yy - 0.5, torch.full_like(xx, -0.1)]))
        self.default_gradcam_layer = "gate"

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        a = self.gate(torch.relu(self.redness(x)))  # (B, 1, H, W), zero outside R
        v = a.sum(dim=(-2, -1)) / self.area  # (B, 1): mean redness of R
        b, _, h, w = x.shape
        logits = torch.zeros(b, self.n_classes, h, w, dtype=x.dtype, device=x.device)
        logits = logits + (8.0 * v).view(b, 1, 1, 1) * F.one_hot(torch.tensor(0), self.n_classes).view(1, -1, 1, 1)
        depth = self.ramp * (1.0 + v.view(b, 1, 1, 1))
        raw = self.field[None] + 0.2 * v.view(b, 1, 1, 1)  # v pulls every normal towards (1, 1, 1)
        return {"segmentation": logits, "depth": depth, "normals": raw / raw.norm(dim=1, keepdim=True)}


def red_square_image(size: tuple[int, int] = (32, 32), region: tuple[int, int, int, int] = (4, 12, 4, 12),
                     seed: int = 0) -> torch.Tensor:
    """Textured grey image ``(3, H, W)`` with a red square exactly on ``R``."""
    rng = np.random.default_rng(seed)
    img = 0.4 + 0.1 * rng.random((3, *size))
    img[:, region[0]:region[1], region[2]:region[3]] = np.array([1.0, 0.0, 0.0])[:, None, None]
    return torch.from_numpy(img.astype(np.float32))


def cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class TinyMTL(nn.Module):
    """Small smooth multi-task CNN; the Grad-CAM layer ``body.1`` is at half resolution."""

    def __init__(self, n_classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.body = nn.Sequential(cbr(3, 8), cbr(8, 16, stride=2), cbr(16, 16))
        self.heads = nn.ModuleDict({"segmentation": nn.Conv2d(16, n_classes, 1), "depth": nn.Conv2d(16, 1, 1),
                                    "normals": nn.Conv2d(16, 3, 1)})
        with torch.no_grad():
            for p in self.parameters():
                fan_in = p[0].numel() if p.dim() > 1 else 10
                p.copy_(torch.randn(p.shape, generator=g) * 1.5 / fan_in**0.5)
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                    m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        self.default_gradcam_layer = "body.1"
        self.eval()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.body(x)
        f = F.interpolate(F.max_pool2d(f, 3, 1, 1), size=x.shape[-2:], mode="bilinear", align_corners=False)
        raw = self.heads["normals"](f)
        return {"segmentation": self.heads["segmentation"](f), "depth": 2.0 + self.heads["depth"](f),
                "normals": raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)}


def photos(size: tuple[int, int]) -> list[torch.Tensor]:
    """scikit-image's astronaut, coffee and chelsea resized to ``size``, as ``(3, H, W)`` in [0, 1]."""
    from skimage import data
    from skimage.transform import resize

    return [torch.from_numpy(resize(f(), size, anti_aliasing=True).astype(np.float32)).permute(2, 0, 1).contiguous()
            for f in (data.astronaut, data.coffee, data.chelsea)]


def real_images(size: tuple[int, int], n: int) -> list[torch.Tensor]:
    """The first ``n`` NYUv2 RGB frames of the shared sample, resized; empty when the data is absent."""
    from skimage.io import imread
    from skimage.transform import resize

    files = sorted(REAL_IMAGES.glob("*_image.png"))[:n] if REAL_IMAGES.is_dir() else []
    out = []
    for f in files:
        rgb = imread(f)[..., :3].astype(np.float32) / 255.0
        out.append(torch.from_numpy(resize(rgb, size, anti_aliasing=True).astype(np.float32)).permute(2, 0, 1))
    return [o.contiguous() for o in out]


def calibrated_study_model(arch: str, images: torch.Tensor) -> torch.nn.Module:
    """A tiny study architecture with BatchNorm statistics of ``images`` (O(1) outputs, not float noise)."""
    from mtlx_core.models import build_model

    torch.manual_seed(0)
    extra = {"head_hidden": 8} if arch == "deeplab_resnet34" else {}
    model = build_model(arch, {"segmentation": 5, "depth": 1, "normals": 3}, width=0.0625, **extra)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()
