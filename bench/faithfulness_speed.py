"""The faithfulness family's engine vs each metric's reference implementation, on the demo SegNet-MTAN.

    python bench/faithfulness_speed.py [--run RUN_ID --models-dir D] [--images 8] [--targets N] [--size 64 96]
                                       [--ref-every 4] [--threads 2] [--metrics irof,deletion,...] [--device cuda]
                                       [--rounding exact|tie_safe|index_safe]

Model: a trained run (``--run``), else an untrained ``build_model("segnet_mtan", ...)`` at the demo width (the
``demo_segnet_mtan`` preset: 0.125, the synthetic rooms' classes, depth and normals), seed 0, with BatchNorm
statistics re-estimated on the benchmark images (identity BN on Xavier weights gives outputs of ~1e-7, float
noise). Images: NYUv2 frames of ``../shared/data`` resized to ``--size`` (scikit-image photos, with a note,
where absent). Maps: Grad-CAM of every target of the three tasks (``--targets N``: the first N per task and
image; all-zero maps skipped). Each metric (its defaults, study fill for Deletion) is computed by the engine
(``evaluate``, most relevant first, one prepared ``FastForward`` with the demo preset's ``index_safe`` rounding
unless ``--rounding`` says otherwise, shared by all metrics, SLIC
included in IROF's time) and by its reference (``faithfulness.crosscheck``: Quantus 0.6.0, pytorch-grad-cam,
RISE's loop, one image and map per call, eager model) on the same maps; ``--ref-every k`` runs the reference
on every k-th map and scales its time by the number of maps. Threads: ``--threads`` (default 2) for both.
``--device cuda`` runs the model (ours and the reference) on the GPU; the engine's chunks are then sized from the
GPU's free memory (``mtlx_core.faithfulness.memory``; the chosen chunk per graph is logged).
Prints per metric: time ours, time reference, speedup, max |score diff|; the last line:
``irof=X deletion=X insertion=X road=X region=X faithcorr=X min_speedup=X max_diff=Y forward_efficiency=Z``
(speedups; ``forward_efficiency`` = rows forwarded / (chunks x chunk capacity) over every metric's engine run).
Timings on a shared CPU are approximate; note ``uptime``'s load with every figure.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _explain_models import photos, real_images  # noqa: E402
from irof_speed import calibrate_bn  # noqa: E402  (bench/ is on sys.path when run as a script)

from mtlx_core.data.layout import get_dataset_spec  # noqa: E402
from mtlx_core.explain.fastforward import ALL_TASKS, ROUNDINGS, FastForward, ForwardSettings  # noqa: E402
from mtlx_core.explain.gradcam import explain  # noqa: E402
from mtlx_core.explain.superpixels import compute_superpixels  # noqa: E402
from mtlx_core.faithfulness import Engine, EngineSettings, FamilySettings, build_metrics, evaluate  # noqa: E402
from mtlx_core.faithfulness.crosscheck import reference_check, scalar_fn  # noqa: E402
from mtlx_core.models import build_model  # noqa: E402
from mtlx_core.tasks import Task, build_tasks  # noqa: E402
from mtlx_core.train.config import get_preset  # noqa: E402

LINE = ("irof", "deletion", "insertion", "road", "region", "faithcorr")




def load_model(args: argparse.Namespace, images: torch.Tensor) -> tuple[nn.Module, dict[str, Task], str]:
    if args.run:
        from mtlx_core.runs import load_run

        run = load_run(args.run, args.models_dir)
        tasks = build_tasks(get_dataset_spec(run.config["dataset"]), run.config["tasks"])
        return run.model.eval(), tasks, f"run {args.run}"
    cfg = get_preset("demo_segnet_mtan")
    tasks = build_tasks(get_dataset_spec(cfg.dataset), cfg.tasks)
    torch.manual_seed(0)
    model = build_model("segnet_mtan", {t: task.out_channels for t, task in tasks.items()}, width=cfg.width)
    calibrate_bn(model, images)
    return model, tasks, f"untrained segnet_mtan width {cfg.width}, BN statistics of the images"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=None, help="a trained run id (default: untrained demo-width SegNet-MTAN)")
    ap.add_argument("--models-dir", default="models_store")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--targets", type=int, default=None, help="maps per task and image (default: every target)")
    ap.add_argument("--size", type=int, nargs=2, default=(64, 96))
    ap.add_argument("--ref-every", type=int, default=4, help="reference on every k-th map (time scaled; default 4)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--metrics", default="irof,deletion,insertion,road,region,pixelflip,faithcorr")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    ap.add_argument("--rounding", default="index_safe", choices=ROUNDINGS,
                    help="the engine's forward rounding (default index_safe, the demo preset's)")
    args = ap.parse_args(argv)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("mtlx_core.faithfulness.engine").setLevel(logging.INFO)  # the chunk of each graph
    torch.set_num_threads(args.threads)
    size = (int(args.size[0]), int(args.size[1]))
    imgs, source = real_images(size, args.images), "nyuv2-sample/densedepth_examples"
    if len(imgs) < args.images:
        print(f"note: {len(imgs)} real frames found in ../shared/data; generated photos fill up to {args.images}")
        imgs, source = (imgs + photos(size) * args.images)[: args.images], "nyuv2 + skimage photos"
    images = torch.stack(imgs)
    model, tasks, what = load_model(args, images)
    model = model.to(args.device)
    on_device = images.to(args.device)  # SLIC and the reference's inputs stay on the CPU
    items = []
    for task in tasks.values():
        exps = [e for e in explain(model, on_device, task) if not e.is_zero]
        for i in range(len(images)):
            items += [e for e in exps if e.image_index == i][: args.targets]
    print(f"model: {what} on {args.device}; images: {len(images)} x {size} from {source}; "
          f"torch threads {torch.get_num_threads()}; engine rounding {args.rounding}; "
          f"{len(items)} Grad-CAM maps {({t: sum(e.task == t for e in items) for t in tasks})}")
    fwd = FastForward(model, ForwardSettings(rounding=args.rounding))
    for graph in [*tasks, ALL_TASKS]:  # trace every graph before timing anything
        fwd(graph, on_device[:2])
    family = FamilySettings(orderings=("morf",))
    speed: dict[str, float] = {}
    diffs: dict[str, float] = {}
    rows = capacity = 0
    for metric in build_metrics(args.metrics):
        engine = Engine(model, tasks, EngineSettings(), forward=fwd)
        t0 = time.perf_counter()
        sps = [compute_superpixels(img) for img in images] if metric.uses_superpixels else None
        results = evaluate(model, on_device, items, tasks, [metric], family, sps, engine)
        t_ours = time.perf_counter() - t0
        rows, capacity = rows + engine.stats.rows, capacity + engine.stats.capacity
        ok = [r for r in results if r.status == "ok"]
        picked = ok[:: max(1, args.ref_every)]
        t_ref, worst, notes = 0.0, 0.0, set()
        for r in picked:
            e = next(e for e in items if (e.image_index, e.task, e.target_id) == (r.image_index, r.task, r.target_id))
            img = images[r.image_index].numpy()
            f = scalar_fn(model, tasks[r.task], e.target, img, divisor=r.clean_score)
            t1 = time.perf_counter()
            check = reference_check(metric, f, img, e.saliency, "morf", sps[r.image_index].labels if sps else None)
            t_ref += time.perf_counter() - t1
            if not check.ok:
                notes.add(check.note)
                continue
            assert r.score is not None
            worst = max(worst, abs(r.score - check.score))
        t_ref *= len(ok) / max(1, len(picked))
        speed[metric.label], diffs[metric.label] = t_ref / t_ours, worst
        print(f"{metric.label:10s} ours {t_ours:7.1f} s  reference {t_ref:8.1f} s ({len(picked)} of {len(ok)} maps)  "
              f"speedup {t_ref / t_ours:6.1f}x  max |score diff| {worst:.2e}  "
              f"engine rows {engine.stats.rows} eff {engine.stats.efficiency:.3f}"
              + (f"  notes: {sorted(notes)}" if notes else ""))
    shown = [m for m in LINE if m in speed]
    print(" ".join(f"{m}={speed[m]:.2f}" for m in shown)
          + f" min_speedup={min(speed.values()):.2f} max_diff={max(diffs.values()):.2e} "
          f"forward_efficiency={rows / capacity if capacity else float('nan'):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
