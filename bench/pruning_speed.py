"""CPU speed of structurally pruned demo models: parameters, MACs and latency, dense and pruned side by side.

    python bench/pruning_speed.py [--threads 1] [--repeats 25]

- Network Slimming at 50-90 % on the demo SegNet-MTAN + FAMO architecture (preset ``demo_segnet_mtan_famo``).
  The model is randomly initialised and its BN scale factors are drawn from |N(0, 1)| (a stand-in for a
  sparsity-trained model; the threshold is global, so the per-layer shares vary as they would after training);
- HRank rounds 1-4 (50 / 75 / 87.5 / 93.75 %) on the demo SegNet-MTAN (``demo_segnet_mtan``), ranks on random
  images between rounds (no fine-tuning: it does not change the architecture).

Latency: median over ``--repeats`` forward passes at the demo input size, batch 1 and 8, under
``torch.inference_mode`` with a fixed thread count; all models of an arm are timed interleaved in one loop so
that load from other processes hits them alike. The last line reads
``netslim70_latency_ratio=X hrank75_latency_ratio=Y`` (dense / pruned, the smaller of the two batch sizes'
ratios).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from mtlx_core.models import build_model
from mtlx_core.models.surgery import count_macs, count_params
from mtlx_core.prune import channel_plan, feature_map_ranks, hrank_keep, netslim_keep, prune_channels
from mtlx_core.prune.hrank import ROUND_SPARSITIES
from mtlx_core.train.config import DEMO_SYNTH, PRESETS, TrainConfig

INPUT = (3, DEMO_SYNTH["height"], DEMO_SYNTH["width"])
CLASSES = 7  # synthetic rooms


def demo_model(preset: str) -> nn.Module:
    cfg: TrainConfig = PRESETS[preset]
    tasks = {t: {"segmentation": CLASSES, "depth": 1, "normals": 3}[t] for t in cfg.tasks}
    return build_model(cfg.arch, tasks, cfg.width, **cfg.arch_kwargs).eval()


def netslim_models(seed: int) -> dict[str, nn.Module]:
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


def hrank_models(seed: int, batches: int = 2) -> dict[str, nn.Module]:
    torch.manual_seed(seed)
    model = demo_model("demo_segnet_mtan")
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(4, *INPUT, generator=g) for _ in range(batches)]
    models = {"dense": model}
    for s in ROUND_SPARSITIES:
        plan = channel_plan(model)
        model = prune_channels(model, plan, hrank_keep(plan, feature_map_ranks(model, plan, images))).eval()
        models[f"hrank{s * 100:g}"] = model
    return models


@torch.inference_mode()
def latencies(models: dict[str, nn.Module], batch: int, repeats: int) -> dict[str, float]:
    """Median seconds per forward pass of every model, timed interleaved."""
    x = torch.rand(batch, *INPUT, generator=torch.Generator().manual_seed(0))
    for m in models.values():  # warm-up
        m(x)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(repeats):
        for k, m in models.items():
            t0 = time.perf_counter()
            m(x)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def report(title: str, models: dict[str, nn.Module], repeats: int) -> dict[str, float]:
    """Print the table of one arm; returns the dense / pruned latency ratio of every pruned model."""
    lat = {b: latencies(models, b, repeats) for b in (1, 8)}
    p0, m0 = count_params(models["dense"]), count_macs(models["dense"], INPUT)
    print(f"\n{title}")
    print(f"{'model':>14} {'params':>10} {'MACs':>14} {'params %':>9} {'MACs %':>7} {'b1 ms':>8} {'b8 ms':>8} "
          f"{'x b1':>6} {'x b8':>6}")
    ratios = {}
    for k, m in models.items():
        p, macs = count_params(m), count_macs(m, INPUT)
        r1, r8 = lat[1]["dense"] / lat[1][k], lat[8]["dense"] / lat[8][k]
        ratios[k] = min(r1, r8)
        print(f"{k:>14} {p:>10,} {macs:>14,} {100 * p / p0:>8.1f}% {100 * macs / m0:>6.1f}% "
              f"{1e3 * lat[1][k]:>8.1f} {1e3 * lat[8][k]:>8.1f} {r1:>6.2f} {r8:>6.2f}")
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (fixed for all models)")
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU latency at {INPUT[1]}x{INPUT[2]}, {args.threads} thread(s), median of {args.repeats} "
          f"interleaved repeats, torch {torch.__version__}")
    famo, plain = PRESETS["demo_segnet_mtan_famo"], PRESETS["demo_segnet_mtan"]
    ns = report(f"Network Slimming, demo_segnet_mtan_famo (width {famo.width:g}, {'+'.join(famo.tasks)})",
                netslim_models(args.seed), args.repeats)
    hr = report(f"HRank rounds, demo_segnet_mtan (width {plain.width:g}, {'+'.join(plain.tasks)})",
                hrank_models(args.seed), args.repeats)
    print(f"netslim70_latency_ratio={ns['netslim70']:.2f} hrank75_latency_ratio={hr['hrank75']:.2f}")


if __name__ == "__main__":
    main()
