"""IROF engine vs Quantus 0.6.0 on the demo-size SegNet-MTAN, every Grad-CAM target of the three tasks.

    python bench/irof_speed.py [--preset demo_segnet_mtan] [--images 8] [--size H W] [--width W]
                               [--quantus-fraction 1.0] [--threads 0] [--also-folded] [--device cuda]

The model is the preset's architecture, width and tasks (default ``demo_segnet_mtan``: SegNet-MTAN with the
synthetic rooms' 7 classes, depth and normals), randomly initialised (seed 0) with BatchNorm statistics
re-estimated on the benchmark images (Xavier init with identity BN gives outputs of ~1e-7, i.e. pure float
noise). Images: the NYUv2 frames of the shared sample (scikit-image photos if absent), resized to the preset's
image size (``--size``/``--width`` override). Both sides score the same Grad-CAM maps (all-zero maps skipped)
with the same model. Ours is timed cold (SLIC, graph tracing and everything else included) and warm (prepared forwards).
``forward_efficiency`` = perturbed images forwarded per second during the warm IROF run divided by the raw
throughput of the same prepared forwards (best batch size per graph: each task's and the all-tasks one, weighted by
the mix of forwarded images), both measured in this run. With ``--quantus-fraction f < 1`` Quantus runs on every
(1/f)-th request and its time is scaled by the number of perturbed images. The engine's default forwards have
batch-1 numerics (every row bit-identical to the eager model on one image, as Quantus runs it; see
``mtlx_core.explain.fastforward``).
``--also-folded`` also times the engine with BN folded and channels-last, cheaper forwards whose rounding
differences max-unpool ties amplify, and reports how far its AOCs are from Quantus'. Timings on a shared CPU
are approximate; ratios are measured side by side. Note ``uptime``'s load with every figure.
``--device cuda`` runs the model (ours and Quantus) on the GPU; the engine's chunks are then sized from the GPU's
free memory (``mtlx_core.faithfulness.memory``; the chosen chunk per graph is logged).
Threads: both sides run with the same torch thread count, by default torch's own (all cores, what a user
gets). Quantus forwards one image at a time, which a second core barely speeds up on a small model; the
engine's batched forwards split each batch over the cores. ``--threads 1`` measures the single-core ratio.
"""

from __future__ import annotations

import argparse
import logging
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

from mtlx_core.data.layout import get_dataset_spec  # noqa: E402
from mtlx_core.explain.fastforward import ALL_TASKS, FastForward, ForwardSettings  # noqa: E402
from mtlx_core.explain.gradcam import explain  # noqa: E402
from mtlx_core.explain.irof import IrofSettings, irof  # noqa: E402
from mtlx_core.explain.quantus_ref import quantus_irof  # noqa: E402
from mtlx_core.explain.superpixels import compute_superpixels  # noqa: E402
from mtlx_core.models import build_model  # noqa: E402
from mtlx_core.tasks import DepthTask, NormalsTask, SegmentationTask  # noqa: E402
from mtlx_core.train.config import get_preset  # noqa: E402


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


class Clock:
    """Wall and process CPU seconds since creation (CPU time is robust to other processes' load)."""

    def __init__(self) -> None:
        self.w0, self.c0 = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.w0, time.process_time() - self.c0


def raw_throughput(fwd: FastForward, task: str, images: torch.Tensor,
                   batch_sizes: tuple[int, ...]) -> tuple[float, float]:
    """Best images/second of ``fwd(task, .)`` over ``batch_sizes``: (wall, CPU time)."""
    best_w = best_c = 0.0
    sync = torch.cuda.synchronize if images.is_cuda else (lambda: None)
    for bs in batch_sizes:
        x = images.repeat((bs + len(images) - 1) // len(images), 1, 1, 1)[:bs].contiguous()
        fwd(task, x)
        reps = max(2, 64 // bs)
        sync()
        clk = Clock()
        for _ in range(reps):
            fwd(task, x)
        sync()
        w, c = clk.stop()
        best_w, best_c = max(best_w, bs * reps / w), max(best_c, bs * reps / c)
    return best_w, best_c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="demo_segnet_mtan", help="training preset giving arch, width, size")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, nargs=2, default=None, help="image H W (default: the preset's)")
    ap.add_argument("--width", type=float, default=None, help="model width (default: the preset's)")
    ap.add_argument("--quantus-fraction", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads for both sides (0: torch's default)")
    ap.add_argument("--also-folded", action="store_true", help="also time BN-folded, channels-last forwards")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    args = ap.parse_args(argv)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("mtlx_core.faithfulness.engine").setLevel(logging.INFO)  # the chunk of each graph
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = get_preset(args.preset)
    spec = get_dataset_spec(cfg.dataset)
    size = tuple(args.size) if args.size else (
        (cfg.synth["height"], cfg.synth["width"]) if cfg.synth else (spec.height, spec.width))
    width = args.width if args.width is not None else cfg.width
    imgs = real_images(size, args.images)
    source = "nyuv2-sample/densedepth_examples"
    if len(imgs) < args.images:
        imgs, source = (imgs + photos(size) * args.images)[: args.images], "nyuv2 + skimage photos"
    images = torch.stack(imgs)
    torch.manual_seed(0)
    all_tasks = {"segmentation": SegmentationTask(spec.classes), "depth": DepthTask(spec.depth_kind),
                 "normals": NormalsTask()}
    tasks = {t: all_tasks[t] for t in cfg.tasks}
    model = build_model(cfg.arch, {t: task.out_channels for t, task in tasks.items()}, width=width,
                        **cfg.arch_kwargs)
    calibrate_bn(model, images)
    model = model.to(args.device)
    on_device = images.to(args.device)  # SLIC and Quantus' inputs stay on the CPU
    exps = [e for t in tasks.values() for e in explain(model, on_device, t) if not e.is_zero]
    print(f"preset {cfg.preset}: {cfg.arch} width {width} on {args.device}; "
          f"images: {len(images)} x {size} from {source}; torch threads {torch.get_num_threads()}; "
          f"{len(exps)} non-zero Grad-CAM maps "
          + str({t: sum(e.task == t for e in exps) for t in tasks}))
    settings = IrofSettings(baselines=())

    clk = Clock()
    sps = [compute_superpixels(img) for img in images]
    fwd = FastForward(model, settings.forward)
    ours = irof(model, on_device, exps, sps, tasks, settings, forward=fwd)
    t_cold, c_cold = clk.stop()
    n_rows = sum(r.n_segments for r in ours)
    print(f"ours cold: {t_cold:.1f} s (cpu {c_cold:.1f} s) for {len(ours)} curves, {n_rows} curve points, "
          f"{sum(fwd.n_forwarded.values())} images forwarded (incl. clean and tracing probes); rows bit-identical "
          f"to batch-1 eager forwards: {sorted(k[0] for k, v in fwd.bitwise.items() if v)}")

    sizes = (1, 2, 4, 8, 16, 32, 64)
    graphs = [*tasks, ALL_TASKS]  # images used by several tasks run the graph of all task outputs
    raw_before = {t: raw_throughput(fwd, t, on_device, sizes) for t in graphs}
    fwd.n_forwarded.clear()
    clk = Clock()
    warm = irof(model, on_device, exps, sps, tasks, settings, forward=fwd)
    t_warm, c_warm = clk.stop()
    counts = dict(fwd.n_forwarded)
    raw_after = {t: raw_throughput(fwd, t, on_device, sizes) for t in graphs}
    raw = {t: max(raw_before[t][0], raw_after[t][0]) for t in graphs}
    raw_cpu = {t: max(raw_before[t][1], raw_after[t][1]) for t in graphs}
    ideal = sum(counts[t] / raw[t] for t in counts)
    ideal_cpu = sum(counts[t] / raw_cpu[t] for t in counts)
    efficiency = ideal / t_warm
    print(f"ours warm: {t_warm:.1f} s (cpu {c_warm:.1f} s), {sum(counts.values())} images forwarded {counts}; "
          "raw best img/s " + str({t: round(v, 1) for t, v in raw.items()})
          + f" (cpu {({t: round(v, 1) for t, v in raw_cpu.items()})}); ideal forward time {ideal:.1f} s "
          f"(cpu {ideal_cpu:.1f} s); forward_efficiency by cpu time {ideal_cpu / c_warm:.3f}")
    assert all(a.aoc == b.aoc or np.isnan(a.aoc) for a, b in zip(ours, warm, strict=True))
    folded = None
    if args.also_folded:
        fold_settings = IrofSettings(baselines=(), forward=ForwardSettings(fold_bn=True, channels_last=True))
        clk = Clock()
        sps_fold = [compute_superpixels(img) for img in images]
        folded = irof(model, on_device, exps, sps_fold, tasks, fold_settings)
        t_folded, _ = clk.stop()
        print(f"ours folded + channels-last cold: {t_folded:.1f} s")

    step = max(1, round(1 / args.quantus_fraction))
    picked = list(range(0, len(exps), step))
    clk = Clock()
    diffs, diffs_folded = [], []
    for i in picked:
        e = exps[i]
        q = quantus_irof(model, images[e.image_index], e.saliency, tasks[e.task], e.target)
        diffs.append((abs(q - ours[i].aoc), e.task, e.target_name, e.image_index))
        if folded is not None:
            diffs_folded.append(abs(q - folded[i].aoc))
    t_q_run, c_q_run = clk.stop()
    scale = n_rows / sum(ours[i].n_segments for i in picked)
    t_q, c_q = t_q_run * scale, c_q_run * scale
    diffs.sort(reverse=True)
    for task in tasks:
        d = [x for x, t, *_ in diffs if t == task]
        if not d:  # --quantus-fraction picked none of the task's curves
            continue
        print(f"  {task:12s} max |aoc diff| {max(d):.2e}  median {np.median(d):.2e}  over {len(d)} targets")
    print(f"quantus: {t_q_run:.1f} s for {len(picked)} of {len(exps)} curves -> {t_q:.1f} s for all "
          f"(cpu {c_q:.1f} s)")
    print(f"worst: {diffs[:3]}")
    print(f"speedup cold {t_q / t_cold:.2f}x, warm {t_q / t_warm:.2f}x; by cpu time cold {c_q / c_cold:.2f}x, "
          f"warm {c_q / c_warm:.2f}x")
    if folded is not None:
        print(f"folded + channels-last: speedup cold {t_q / t_folded:.2f}x, max |aoc diff| {max(diffs_folded):.2e}, "
              f"median {np.median(diffs_folded):.2e}")
    print(f"speedup_vs_quantus={t_q / t_cold:.2f} max_aoc_diff={diffs[0][0]:.2e} forward_efficiency={efficiency:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
