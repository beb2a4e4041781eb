"""Every CAM explainer (all targets at once) vs pytorch-grad-cam one target at a time, on the demo SegNet-MTAN.

    python bench/explainers_speed.py [--size 64 96] [--width W] [--k 32] [--reps 3] [--threads 1] [--image 0]

Model: an untrained ``build_model("segnet_mtan", ...)`` with 13 segmentation classes (NYUv2) at the demo width
(the ``demo_segnet_mtan`` preset's, ``--width`` overrides), seed 0, BatchNorm statistics re-estimated on the
benchmark frames (O(1) outputs), its default (D11) layer. Image: one NYUv2 frame of ``../shared/data`` resized
to ``--size`` (a scikit-image photo, with a note, where absent). All 13 classes are explained: a class's pixel
set is its predicted pixels, or every pixel when the network does not predict it. For each CAM variant, ours
(``get_explainer(name).explain``: one forward and one batched backward for the 13 targets; Score-CAM: the K
most active channels' masked images forwarded once and scored for every target) against pytorch-grad-cam's
class, one object reused for the 13 calls (Score-CAM: its ``ScoreCAM`` restricted to the same K channels, its
progress bar silenced, 16 rows per forward as it defaults to). Times are the median of ``--reps`` interleaved
runs; the map difference compares input-resolution maps (pytorch-grad-cam min-max normalises after its cv2
resize, so ours is min-max normalised once more; tests/test_explainers.py checks the layer maps to 1e-5).
Prints per explainer: ours, reference, speedup, max map diff; the last line:
``gradcam=X gradcampp=X hirescam=X xgradcam=X layercam=X scorecam=X min_speedup=X max_map_diff=Y`` (speedups).
Timings on a shared CPU are approximate; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _explain_models import photos, real_images  # noqa: E402
from irof_speed import calibrate_bn  # noqa: E402  (bench/ is on sys.path when run as a script)

from mtlx_core.data.layout import NYUV2_CLASSES  # noqa: E402
from mtlx_core.explain.explainers import get_explainer  # noqa: E402
from mtlx_core.explain.gradcam import Explanation  # noqa: E402
from mtlx_core.models import build_model  # noqa: E402
from mtlx_core.tasks import SegmentationTask  # noqa: E402
from mtlx_core.tasks.base import ExplanationTarget  # noqa: E402
from mtlx_core.train.config import get_preset  # noqa: E402

CAMS = {"gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus", "hirescam": "HiResCAM", "xgradcam": "XGradCAM",
        "layercam": "LayerCAM", "scorecam": "ScoreCAM"}


class SegOutput(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["segmentation"]


def reference_class(name: str, k: int) -> type:
    """pytorch-grad-cam's class for ``name``; Score-CAM restricted to each image's ``k`` most active channels."""
    import pytorch_grad_cam
    import pytorch_grad_cam.score_cam as score_cam

    cls = getattr(pytorch_grad_cam, CAMS[name])
    if name != "scorecam":
        return cls
    score_cam.tqdm = SimpleNamespace(tqdm=lambda it: it)  # no progress bar per target

    class TopKScoreCAM(cls):
        def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth):
            order = np.argsort(-activations.mean(axis=(2, 3)), axis=1, kind="stable")[:, :k]
            chosen = np.take_along_axis(activations, order[:, :, None, None], axis=1)
            return super().get_cam_image(input_tensor, target_layer, targets, chosen, grads, eigen_smooth)

    return TopKScoreCAM


def map_diff(ours: list[Explanation], theirs: list[np.ndarray]) -> float:
    diffs = []
    for e, th in zip(ours, theirs, strict=True):
        m = e.map_input
        mine = (m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else m
        diffs.append(float(np.abs(mine - th / max(float(th.max()), 1e-30)).max()))
    return max(diffs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, nargs=2, default=(64, 96), help="image H W")
    ap.add_argument("--width", type=float, default=None, help="model width (default: the demo preset's)")
    ap.add_argument("--k", type=int, default=32, help="Score-CAM's channels")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: leave the default)")
    ap.add_argument("--image", type=int, default=0, help="which frame")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = (int(args.size[0]), int(args.size[1]))
    width = args.width if args.width is not None else get_preset("demo_segnet_mtan").width
    frames, source = real_images(size, 8), "nyuv2-sample/densedepth_examples"
    if not frames:
        print("note: no NYUv2 frames in ../shared/data; scikit-image photos instead")
        frames, source = photos(size), "skimage photos"
    image = frames[args.image % len(frames)][None]
    torch.manual_seed(0)
    model = build_model("segnet_mtan", {"segmentation": 13, "depth": 1, "normals": 3}, width=width)
    calibrate_bn(model, torch.stack(frames))
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
    print(f"13 targets ({int(sum(bool((labels == c).any()) for c in range(13)))} predicted), image {size} from "
          f"{source}, segnet_mtan width {width}, layer {model.default_gradcam_layer}, Score-CAM k={args.k}, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    speed, diffs = {}, {}
    for name in CAMS:
        explainer = get_explainer(name, k=args.k) if name == "scorecam" else get_explainer(name)
        t_ours, t_theirs = [], []
        with reference_class(name, args.k)(SegOutput(model), [layer]) as cam:
            for _ in range(args.reps):
                t0 = time.perf_counter()
                ours = explainer.explain(model, image, task, targets=[targets])
                t_ours.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                theirs = [cam(image, targets=[f])[0] for f in callables]
                t_theirs.append(time.perf_counter() - t0)
        to, tt = statistics.median(t_ours), statistics.median(t_theirs)
        speed[name], diffs[name] = tt / to, map_diff(ours, theirs)
        print(f"{name:10s} ours {to:7.3f} s  pytorch-grad-cam {tt:7.3f} s  speedup {tt / to:6.2f}x  "
              f"max map diff {diffs[name]:.2e}  ({sum(e.is_zero for e in ours)} all-zero maps)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(" ".join(f"{n}={speed[n]:.2f}" for n in CAMS)
          + f" min_speedup={min(speed.values()):.2f} max_map_diff={max(diffs.values()):.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
