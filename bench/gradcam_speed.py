"""Batched Grad-CAM (one forward, one batched backward) vs pytorch-grad-cam one target at a time.

    python bench/gradcam_speed.py [--preset demo_segnet_mtan] [--size H W] [--width W] [--reps 3] [--threads 1]

The preset's SegNet-MTAN (its width and image size; ``--width``/``--size`` override) with 13 segmentation
classes (NYUv2), its default Grad-CAM layer, one real NYUv2 frame (a scikit-image photo if absent). All 13
classes are explained: a class's pixel set is its predicted pixels, or every pixel when the random network does
not predict it (so that no target is trivially zero). pytorch-grad-cam gets the same model (wrapped to return
the segmentation tensor), layer and target callables, with one ``GradCAM`` object reused for the 13 calls. Times
are the median of ``--reps`` interleaved runs; the map difference compares input-resolution maps
(pytorch-grad-cam min-max normalises after its cv2 resize, so ours is min-max normalised once more for the
comparison; see tests/test_gradcam.py for the exact layer-level check).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _explain_models import photos, real_images  # noqa: E402

from mtlx_core.data.layout import NYUV2_CLASSES  # noqa: E402
from mtlx_core.explain.gradcam import explain  # noqa: E402
from mtlx_core.models import build_model  # noqa: E402
from mtlx_core.tasks import SegmentationTask  # noqa: E402
from mtlx_core.tasks.base import ExplanationTarget  # noqa: E402
from mtlx_core.train.config import get_preset  # noqa: E402


class SegOutput(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["segmentation"]


def main(argv: list[str] | None = None) -> int:
    from pytorch_grad_cam import GradCAM

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="demo_segnet_mtan", help="training preset giving the width and size")
    ap.add_argument("--size", type=int, nargs=2, default=None, help="image H W (default: the preset's)")
    ap.add_argument("--width", type=float, default=None, help="model width (default: the preset's)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: leave the default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = get_preset(args.preset)
    size = tuple(args.size) if args.size else ((cfg.synth["height"], cfg.synth["width"]) if cfg.synth else (288, 384))
    width = args.width if args.width is not None else cfg.width
    image = (real_images(size, 1) or photos(size))[0][None]
    torch.manual_seed(0)
    model = build_model("segnet_mtan", {"segmentation": 13, "depth": 1, "normals": 3}, width=width).eval()
    task = SegmentationTask(NYUV2_CLASSES)
    with torch.no_grad():
        labels = model(image)["segmentation"][0].argmax(0)
    targets = []
    for c, name in enumerate(NYUV2_CLASSES):
        mask = labels == c
        targets.append(ExplanationTarget("segmentation", c, name, mask if mask.any() else torch.ones_like(mask),
                                         "class"))
    callables = [lambda out, t=t: task.gradcam_objective(out, t) for t in targets]
    layer = model.get_submodule(model.default_gradcam_layer)

    t_ours, t_theirs = [], []
    with GradCAM(SegOutput(model), [layer]) as cam:
        for _ in range(args.reps):
            t0 = time.perf_counter()
            ours = explain(model, image, task, targets=[targets])
            t_ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            theirs = [cam(image, targets=[f])[0] for f in callables]
            t_theirs.append(time.perf_counter() - t0)
    diffs = []
    for e, th in zip(ours, theirs, strict=True):
        m = e.map_input
        mine = (m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else m
        diffs.append(float(np.abs(mine - th / max(th.max(), 1e-30)).max()))
    to, tt = statistics.median(t_ours), statistics.median(t_theirs)
    print(f"13 targets, preset {cfg.preset}, image {size}, width {width}, layer {model.default_gradcam_layer}, "
          f"threads {torch.get_num_threads()}; {sum(e.is_zero for e in ours)} all-zero maps")
    print(f"ours {to:.3f} s (runs {[round(t, 3) for t in t_ours]}); pytorch-grad-cam {tt:.3f} s "
          f"(runs {[round(t, 3) for t in t_theirs]})")
    print(f"speedup_vs_pytorch_grad_cam={tt / to:.2f} max_map_diff={max(diffs):.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
