"""How far Grad-CAM's IROF beats the random ordering, per dense model, task, layer and SLIC size (issue 16).

    python bench/chance_margin.py --models-dir models_store --runs demo_deeplab-... demo_segnet_mtan-... \
        [--images 32] [--offset 32] [--segments 50 100] [--targets 2] [--layers all] [--threads 2]

Images are validation images the demo does NOT report: positions ``offset .. offset+images`` of the study's
seeded image sample (D26; the demo reports the first ``ExplainSettings.images`` positions), so a configuration
chosen here is not tuned on the numbers the demo shows. Everything runs through precompute's own explainer
(``ModelExplainer``: the same Grad-CAM, target draw, IROF engine and shared random baseline).

Printed per (model, task, layer, segments): the map's size at the layer and its cell size in input pixels,
the mean SLIC segment size in pixels, images and targets, Grad-CAM's and random's mean normalised AOC, the
margin (per image, mean over targets; paired), the margin as a share of random, the Wilcoxon p-value, and the
mean clean score of the target (segmentation: mean softmax probability of the class, saturation near 1).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtlx_core.data.layout import get_dataset_spec  # noqa: E402
from mtlx_core.explain.superpixels import SlicSettings, compute_superpixels  # noqa: E402
from mtlx_core.explain.target_draw import TargetDraw  # noqa: E402
from mtlx_core.precompute.explainer import ModelExplainer  # noqa: E402
from mtlx_core.precompute.presets import ExplainSettings  # noqa: E402
from mtlx_core.precompute.units import explain_tasks, make_batches, slic_key  # noqa: E402
from mtlx_core.runs import load_run  # noqa: E402
from mtlx_core.stats.paired import paired_summary  # noqa: E402
from mtlx_core.train import resolve_config  # noqa: E402
from mtlx_core.train.loop import prepare_data  # noqa: E402


def held_out(val, settings: ExplainSettings, offset: int, n: int):
    batches = make_batches(val, offset + n, settings.batch_images, settings.slic, settings.seed,
                           settings.image_sample)
    skip = offset // settings.batch_images
    if offset % settings.batch_images:
        raise SystemExit("--offset must be a multiple of the batch size")
    return batches[skip:]


def score(run_id: str, models_dir: Path, args: argparse.Namespace) -> list[dict]:
    run = load_run(run_id, models_dir)
    preset = run.config.get("train", {}).get("preset")
    cfg = resolve_config(preset, **({"data_root": args.data} if args.data else {})) if preset else None
    spec = get_dataset_spec(run.config["dataset"])
    out = []
    for n_seg in args.segments:
        settings = ExplainSettings(batch_images=4, max_targets=args.targets, metrics=("irof",),
                                   orderings=("morf", "random"), n_random=args.random,
                                   slic=SlicSettings(n_segments=n_seg), ablation_layers=tuple(args.layers))
        if cfg is None:
            raise SystemExit(f"run {run_id} has no preset in its config")
        _, val = prepare_data(cfg)
        batches = held_out(val, settings, args.offset, args.images)
        ex = ModelExplainer(run, explain_tasks(run, spec, settings), settings, "cpu")
        draws = ex.draw_rows(run_id, batches, TargetDraw(args.targets, settings.seed))
        drawn = {(r["image_id"], r["task"], r["target_id"]) for r in draws if r["drawn"]}
        rows = []
        t0 = time.monotonic()
        for b in batches:
            sps = [compute_superpixels(img, settings.slic) for img in b.images]
            wanted: dict[tuple[int, str], set[int]] = {}
            for iid, task, tid in drawn:
                if iid in b.image_ids:
                    wanted.setdefault((b.image_ids.index(iid), task), set()).add(tid)
            prim = ex.run_batch(run_id, b, sps, slic_key(settings.slic), wanted, None)
            rows += [r for r in prim["faithfulness"] if r["metric"] == "irof"]
            for lay in ex.ablation:
                rows += [r for r in ex.run_layer(run_id, b, sps, slic_key(settings.slic), lay, wanted)["faithfulness"]
                         if r["metric"] == "irof"]
            seg_px = float(np.mean([b.images.shape[-1] * b.images.shape[-2] / s.n_segments for s in sps]))
        sizes = {}
        for lay in dict.fromkeys([*ex.plan.primary.values(), *ex.ablation]):
            for t in ex.tasks:
                mod = run.model.get_submodule(ex.layer_path(t, lay))
                got = []
                h = mod.register_forward_hook(lambda _m, _i, o, got=got: got.append(tuple(o.shape[-2:])))
                with torch.inference_mode():
                    run.model(batches[0].images[:1])
                h.remove()
                sizes[lay] = got[0] if got else (0, 0)
        random: dict[tuple[str, str, int], list[dict]] = {}
        for r in rows:
            if r["ordering"] == "random" and r["status"] == "ok":
                random.setdefault((r["image_id"], r["task"], r["target_id"]), []).append(r)
        H, W = batches[0].images.shape[-2:]
        for (task, lay) in sorted({(r["task"], r["layer_label"]) for r in rows if r["ordering"] == "morf"}):
            per_img: dict[str, list[float]] = {}
            g_all, r_all, clean = [], [], []
            for r in rows:
                if r["ordering"] != "morf" or r["task"] != task or r["layer_label"] != lay:
                    continue
                rr = random.get((r["image_id"], task, r["target_id"]))
                if r["status"] != "ok" or not rr:
                    continue
                chance = float(np.mean([x["score_norm"] for x in rr]))  # D24: mean over the K random orderings
                per_img.setdefault(r["image_id"], []).append(r["score_norm"] - chance)
                g_all.append(r["score_norm"])
                r_all.append(chance)
                clean.append(r["clean_score"])
            s = paired_summary([np.mean(v) for v in per_img.values()], n_boot=2000)
            h, w = sizes[lay]
            out.append({"model": run_id, "task": task, "layer": lay + (" *" if lay == ex.plan.primary[task] else ""),
                        "map": f"{h}x{w}", "cell_px": (H / h) * (W / w), "segments": n_seg, "seg_px": seg_px,
                        "images": s.n, "targets": len(g_all), "gradcam": np.mean(g_all), "random": np.mean(r_all),
                        "margin": s.mean, "share": s.mean / np.mean(r_all), "p": s.p, "clean": np.mean(clean),
                        "seconds": time.monotonic() - t0})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models-dir", type=Path, default=ROOT / "models_store")
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--data", help="dataset folder (default: the run's preset's)")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--offset", type=int, default=32, help="skip the first N images of the sample (the demo's)")
    p.add_argument("--segments", type=int, nargs="+", default=[50, 100])
    p.add_argument("--targets", type=lambda v: None if v == "all" else int(v), default=2)
    p.add_argument("--random", type=int, default=5, help="random orderings K (D24)")
    p.add_argument("--layers", nargs="+", default=["all"])
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [r for run in args.runs for r in score(run, args.models_dir, args)]
    cols = ["model", "task", "layer", "map", "cell_px", "segments", "seg_px", "images", "targets", "gradcam",
            "random", "margin", "share", "p", "clean"]
    print("| " + " | ".join(cols) + " |")
    print("|" + " --- |" * len(cols))
    for r in rows:
        cells = [f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        print("| " + " | ".join(cells) + " |")
    print(f"targets per image and task: {args.targets or 'all'} (seeded stratified draw); images: sample positions "
          f"{args.offset}..{args.offset + args.images - 1}; * = D11's layer (the model's default)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
