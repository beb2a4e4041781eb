"""IROF engine vs Quantus 0.6.0 on the demo-size SegNet-MTAN, every Grad-CAM target of the three tasks.

    python bench/irof_speed.py [--images 8] [--size 96 128] [--quantus-fraction 1.0] [--threads 1] [--also-exact]

The model is ``build_model("segnet_mtan", {segmentation: 7, depth: 1, normals: 3}, width=0.25)``, randomly
initialised (seed 0) with BatchNorm statistics re-estimated on the benchmark images (Xavier init with identity
BN gives outputs of ~1e-7, i.e. pure float noise). Images: the NYUv2 frames of the shared sample (scikit-image
photos if absent), resized. Both sides score the same Grad-CAM maps (all-zero maps skipped) with the same
model. Ours is timed cold (SLIC, graph tracing and everything else included) and warm (prepared forwards).
``forward_efficiency`` = perturbed images forwarded per second during the warm IROF run divided by the raw
throughput of the same prepared forwards (best batch size per task, weighted by the task mix), both measured
in this run. With ``--quantus-fraction f < 1`` Quantus runs on every (1/f)-th request and its time is scaled
by the number of perturbed images. ``--also-exact`` also times the engine with eager numerics (task-trimmed
graphs only: no BN folding, no channels-last), whose scores differ from Quantus' only by batched-kernel
rounding. Timings on a shared CPU are approximate; ratios are measured side by side.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _explain_models import photos, real_images  # noqa: E402

from mtlx_core.data.layout import SYNTH_CLASSES  # noqa: E402
from mtlx_core.explain.fastforward import FastForward, ForwardSettings  # noqa: E402
from mtlx_core.explain.gradcam import explain  # noqa: E402
from mtlx_core.explain.irof import IrofSettings, irof  # noqa: E402
from mtlx_core.explain.quantus_ref import quantus_irof  # noqa: E402
from mtlx_core.explain.superpixels import compute_superpixels  # noqa: E402
from mtlx_core.models import build_model  # noqa: E402
from mtlx_core.tasks import DepthTask, NormalsTask, SegmentationTask  # noqa: E402


def calibrate_bn(model: nn.Module, images: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to those of ``images`` (one pass, train mode)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    model.eval()


def raw_throughput(fwd: FastForward, task: str, images: torch.Tensor, batch_sizes: tuple[int, ...]) -> float:
    """Best images/second of ``fwd(task, .)`` over ``batch_sizes``."""
    best = 0.0
    for bs in batch_sizes:
        x = images.repeat((bs + len(images) - 1) // len(images), 1, 1, 1)[:bs].contiguous()
        fwd(task, x)
        reps = max(2, 32 // bs)
        t = time.perf_counter()
        for _ in range(reps):
            fwd(task, x)
        best = max(best, bs * reps / (time.perf_counter() - t))
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, nargs=2, default=(96, 128))
    ap.add_argument("--quantus-fraction", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: leave the default)")
    ap.add_argument("--also-exact", action="store_true", help="also time the engine with eager numerics")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = tuple(args.size)
    imgs = real_images(size, args.images)
    source = "nyuv2-sample/densedepth_examples"
    if len(imgs) < args.images:
        imgs, source = (imgs + photos(size) * args.images)[: args.images], "nyuv2 + skimage photos"
    images = torch.stack(imgs)
    torch.manual_seed(0)
    model = build_model("segnet_mtan", {"segmentation": 7, "depth": 1, "normals": 3}, width=0.25)
    calibrate_bn(model, images)
    tasks = {"segmentation": SegmentationTask(SYNTH_CLASSES), "depth": DepthTask(), "normals": NormalsTask()}
    exps = [e for t in tasks.values() for e in explain(model, images, t) if not e.is_zero]
    print(f"images: {len(images)} x {size} from {source}; torch threads {torch.get_num_threads()}; "
          f"{len(exps)} non-zero Grad-CAM maps "
          + str({t: sum(e.task == t for e in exps) for t in tasks}))
    settings = IrofSettings(baselines=())

    t0 = time.perf_counter()
    sps = [compute_superpixels(img) for img in images]
    fwd = FastForward(model, settings.forward)
    ours = irof(model, images, exps, sps, tasks, settings, forward=fwd)
    t_cold = time.perf_counter() - t0
    n_rows = sum(r.n_segments for r in ours)
    print(f"ours cold: {t_cold:.1f} s for {len(ours)} curves, {n_rows} curve points, "
          f"{sum(fwd.n_forwarded.values())} images forwarded (incl. clean and tracing probes)")

    sizes = (1, 2, 4, 8, 16, 32)
    raw_before = {t: raw_throughput(fwd, t, images, sizes) for t in tasks}
    fwd.n_forwarded.clear()
    t0 = time.perf_counter()
    warm = irof(model, images, exps, sps, tasks, settings, forward=fwd)
    t_warm = time.perf_counter() - t0
    counts = dict(fwd.n_forwarded)
    raw_after = {t: raw_throughput(fwd, t, images, sizes) for t in tasks}
    raw = {t: max(raw_before[t], raw_after[t]) for t in tasks}
    ideal = sum(counts[t] / raw[t] for t in counts)
    efficiency = ideal / t_warm
    print(f"ours warm: {t_warm:.1f} s, {sum(counts.values())} images forwarded {counts}; raw best img/s "
          + str({t: round(v, 1) for t, v in raw.items()}) + f"; ideal forward time {ideal:.1f} s")
    assert all(a.aoc == b.aoc or np.isnan(a.aoc) for a, b in zip(ours, warm, strict=True))
    exact = None
    if args.also_exact:
        ex_settings = IrofSettings(baselines=(), forward=ForwardSettings(fold_bn=False, channels_last=False))
        t0 = time.perf_counter()
        sps_ex = [compute_superpixels(img) for img in images]
        exact = irof(model, images, exps, sps_ex, tasks, ex_settings)
        t_exact = time.perf_counter() - t0
        print(f"ours exact numerics cold: {t_exact:.1f} s")

    step = max(1, round(1 / args.quantus_fraction))
    picked = list(range(0, len(exps), step))
    t0 = time.perf_counter()
    diffs, diffs_exact = [], []
    for i in picked:
        e = exps[i]
        q = quantus_irof(model, images[e.image_index], e.saliency, tasks[e.task], e.target)
        diffs.append((abs(q - ours[i].aoc), e.task, e.target_name, e.image_index))
        if exact is not None:
            diffs_exact.append(abs(q - exact[i].aoc))
    t_q_run = time.perf_counter() - t0
    t_q = t_q_run * n_rows / sum(ours[i].n_segments for i in picked)
    diffs.sort(reverse=True)
    for task in tasks:
        d = [x for x, t, *_ in diffs if t == task]
        print(f"  {task:12s} max |aoc diff| {max(d):.2e}  median {np.median(d):.2e}  over {len(d)} targets")
    print(f"quantus: {t_q_run:.1f} s for {len(picked)} of {len(exps)} curves -> {t_q:.1f} s for all")
    print(f"worst: {diffs[:3]}")
    print(f"speedup cold {t_q / t_cold:.2f}x, warm {t_q / t_warm:.2f}x")
    if exact is not None:
        print(f"exact numerics: speedup cold {t_q / t_exact:.2f}x, max |aoc diff| {max(diffs_exact):.2e}, "
              f"median {np.median(diffs_exact):.2e}")
    print(f"speedup_vs_quantus={t_q / t_cold:.2f} max_aoc_diff={diffs[0][0]:.2e} forward_efficiency={efficiency:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
