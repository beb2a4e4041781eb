"""CPU speed of structurally pruned demo models: parameters, MACs and latency, dense and pruned side by side.

    python bench/pruning_speed.py [--threads 1] [--repeats 25] [--netslim-run RUN] [--hrank-run RUN] [--size H W]

- Network Slimming at 50-90 % on the demo SegNet-MTAN + FAMO architecture (preset ``demo_segnet_mtan_famo``,
  width read from the preset). Without ``--netslim-run`` the model is randomly initialised and its BN scale
  factors are drawn from |N(0, 1)|, i.i.d. over every channel: a neutral stand-in for a sparsity-trained model
  under which the global threshold removes about the same share of every layer. A trained parent (a
  ``demo_segnet_mtan_famo`` run, trained with BN L1) removes very different shares per layer (the attention
  paths' BNs shrink first, see ``mtlx_core.prune.netslim``): ``--netslim-run RUN_ID`` uses its weights;
- HRank rounds 1-4 (50 / 75 / 87.5 / 93.75 %) on the demo SegNet-MTAN (``demo_segnet_mtan``), ranks on random
  images between rounds (no fine-tuning: it does not change the architecture); ``--hrank-run RUN_ID`` starts
  from a trained run and ranks on its training images.

Latency, two columns per batch size (1 and 8), at the demo input size (``--size`` for another, e.g. the
Cityscapes arm's 128 256) with a fixed thread count:

- *eager*: ``model.eval()`` called under ``torch.inference_mode``, as in training code;
- *deployed* (the headline): every model, dense and pruned alike, as shipped for CPU inference by
  ``mtlx_core.prune.deploy``: graph captured with ``make_fx``, BatchNorm folded into the convolutions,
  TorchScript trace + freeze (no Python per op). At batch 1 the eager demo models are dominated by fixed
  per-call costs that pruning cannot remove (``nn.Module`` dispatch, about 90 BN calls, a Python call per op:
  a 70 %-pruned model with 9 % of the MACs still takes about half the dense time); deployment removes those
  costs from both sides, so what is left is the work that pruning shrinks.

Each value is the median over ``--repeats`` forward passes; all models (and both forms) of an arm are timed
interleaved in one loop, so that load from other processes hits them alike. The last line reads
``netslim70_latency_ratio=X hrank75_latency_ratio=Y``: dense / pruned deployed latency, the smaller of the two
batch sizes' ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterable
from itertools import islice

import torch
from torch import nn

from mtlx_core.models import build_model
from mtlx_core.models.surgery import count_macs, count_params
from mtlx_core.prune import channel_plan, feature_map_ranks, hrank_keep, netslim_keep, prune_channels
from mtlx_core.prune.deploy import DEPLOYMENT, deploy
from mtlx_core.prune.hrank import ROUND_SPARSITIES
from mtlx_core.runs import DEFAULT_MODELS_DIR, load_run
from mtlx_core.train.config import DEMO_SYNTH, PRESETS, TrainConfig

INPUT = (3, DEMO_SYNTH["height"], DEMO_SYNTH["width"])  # default input shape; --size gives another
CLASSES = 7  # synthetic rooms
BATCHES = (1, 8)


def demo_model(preset: str) -> nn.Module:
    cfg: TrainConfig = PRESETS[preset]
    tasks = {t: {"segmentation": CLASSES, "depth": 1, "normals": 3}[t] for t in cfg.tasks}
    return build_model(cfg.arch, tasks, cfg.width, **cfg.arch_kwargs).eval()


def trained_model(run_id: str, models_dir: str, preset: str) -> tuple[nn.Module, TrainConfig]:
    run = load_run(run_id, models_dir)
    cfg = TrainConfig.from_dict(run.config["train"])
    if cfg.preset != preset or run.config.get("kind", "train") != "train":
        raise SystemExit(f"run {run_id} is not a dense {preset} training run")
    return run.model.eval(), cfg


def netslim_models(seed: int, run: str | None = None, models_dir: str = DEFAULT_MODELS_DIR) -> dict[str, nn.Module]:
    if run is not None:
        dense, _ = trained_model(run, models_dir, "demo_segnet_mtan_famo")
    else:
        torch.manual_seed(seed)
        dense = demo_model("demo_segnet_mtan_famo")
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in dense.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.copy_(torch.randn(m.num_features, generator=g).abs())
    plan = channel_plan(dense)
    models = {"dense": dense}
    for s in (0.5, 0.6, 0.7, 0.8, 0.9):
        models[f"netslim{s * 100:g}"] = prune_channels(dense, plan, netslim_keep(dense, plan, s)).eval()
    return models


def _run_images(cfg: TrainConfig, batches: int) -> list[torch.Tensor]:
    from mtlx_core.train.batches import training_batches
    from mtlx_core.train.loop import prepare_data

    train_ds, _ = prepare_data(cfg)
    loader = training_batches(train_ds, cfg.batch_size, cfg.seed, 0, batches, None)
    return [b["image"] for b in islice(loader, batches)]


def hrank_models(seed: int, batches: int = 2, run: str | None = None,
                 models_dir: str = DEFAULT_MODELS_DIR, shape: tuple[int, ...] = INPUT) -> dict[str, nn.Module]:
    if run is not None:
        model, cfg = trained_model(run, models_dir, "demo_segnet_mtan")
        images = _run_images(cfg, batches)
    else:
        torch.manual_seed(seed)
        model = demo_model("demo_segnet_mtan")
        g = torch.Generator().manual_seed(seed)
        images = [torch.rand(4, *shape, generator=g) for _ in range(batches)]
    models = {"dense": model}
    for s in ROUND_SPARSITIES:
        plan = channel_plan(model)
        model = prune_channels(model, plan, hrank_keep(plan, feature_map_ranks(model, plan, images))).eval()
        models[f"hrank{s * 100:g}"] = model
    return models


def latencies(fns: dict[str, Callable[[torch.Tensor], object]], batch: int, repeats: int,
              shape: tuple[int, ...] = INPUT) -> dict[str, float]:
    """Median seconds per forward pass of every callable, timed interleaved."""
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for _ in range(3):  # warm-up (TorchScript's profiling executor optimises on the first calls)
            for f in fns.values():
                f(x)
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repeats):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f(x)
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def report(title: str, models: dict[str, nn.Module], repeats: int,
           shape: tuple[int, ...] = INPUT) -> dict[str, float]:
    """Print the table of one arm; returns the dense / pruned deployed latency ratio of every pruned model."""
    example = torch.zeros(1, *shape)
    fns: dict[str, Callable[[torch.Tensor], object]] = {}
    for k, m in models.items():
        fns[f"{k}/eager"] = m.eval()
        fns[f"{k}/deployed"] = deploy(m, example)
    lat = {b: latencies(fns, b, repeats, shape) for b in BATCHES}
    p0, m0 = count_params(models["dense"]), count_macs(models["dense"], shape)
    print(f"\n{title}")
    print(f"{'':>36}{'batch 1 ms':>17}{'batch 8 ms':>17}{'dense / pruned, deployed':>26}")
    print(f"{'model':>10} {'params':>9} {'MACs':>12} {'params':>6} {'MACs':>6} {'eager':>8} {'deployed':>8} "
          f"{'eager':>8} {'deployed':>8} {'x b1':>7} {'x b8':>7} {'(eager b1, b8)':>16}")
    ratios = {}
    for k, m in models.items():
        p, macs = count_params(m), count_macs(m, shape)
        r = {b: lat[b]["dense/deployed"] / lat[b][f"{k}/deployed"] for b in BATCHES}
        e = {b: lat[b]["dense/eager"] / lat[b][f"{k}/eager"] for b in BATCHES}
        ratios[k] = min(r.values())
        print(f"{k:>10} {p:>9,} {macs:>12,} {100 * p / p0:>5.1f}% {100 * macs / m0:>5.1f}% "
              f"{1e3 * lat[1][f'{k}/eager']:>8.1f} {1e3 * lat[1][f'{k}/deployed']:>8.1f} "
              f"{1e3 * lat[8][f'{k}/eager']:>8.1f} {1e3 * lat[8][f'{k}/deployed']:>8.1f} "
              f"{r[1]:>7.2f} {r[8]:>7.2f} {f'({e[1]:.2f}, {e[8]:.2f})':>16}")
    return ratios


def main(argv: Iterable[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (fixed for all models)")
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--netslim-run", help="trained demo_segnet_mtan_famo run to prune instead of the stand-in")
    ap.add_argument("--hrank-run", help="trained demo_segnet_mtan run to prune instead of a random init")
    ap.add_argument("--models-dir", default=DEFAULT_MODELS_DIR, help="where --netslim-run / --hrank-run live")
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input size (default: the demo's; "
                    "SegNet-MTAN needs multiples of 32)")
    args = ap.parse_args(None if argv is None else list(argv))
    shape = (3, *args.size) if args.size else INPUT
    torch.set_num_threads(args.threads)
    print(f"CPU latency at {shape[1]}x{shape[2]}, {args.threads} thread(s), median of {args.repeats} "
          f"interleaved repeats, torch {torch.__version__}; deployed = {DEPLOYMENT}, same for dense and pruned")
    famo, plain = PRESETS["demo_segnet_mtan_famo"], PRESETS["demo_segnet_mtan"]
    models = netslim_models(args.seed, args.netslim_run, args.models_dir)
    src = f"run {args.netslim_run}" if args.netslim_run else "BN scales |N(0,1)| stand-in"
    ns = report(f"Network Slimming, demo_segnet_mtan_famo (width {models['dense'].width:g}, "
                f"{'+'.join(famo.tasks)}; {src})", models, args.repeats, shape)
    models = hrank_models(args.seed, run=args.hrank_run, models_dir=args.models_dir, shape=shape)
    src = f"run {args.hrank_run}" if args.hrank_run else "random init, random images"
    hr = report(f"HRank rounds, demo_segnet_mtan (width {models['dense'].width:g}, {'+'.join(plain.tasks)}; "
                f"{src})", models, args.repeats, shape)
    print(f"netslim70_latency_ratio={ns['netslim70']:.2f} hrank75_latency_ratio={hr['hrank75']:.2f}")


if __name__ == "__main__":
    main()
