"""CPU speed of structurally pruned demo models: what each method removes, parameters, MACs and latency.

    python bench/pruning_speed.py [--threads 1] [--repeats 25] [--netslim-run MODE=RUN ...] [--hrank-run RUN]
                                  [--models-dir DIR] [--size H W]

Parents are trained demo models (trained here when missing, reused from ``--models-dir`` when present: the run
id derives from the configuration):

- Network Slimming at 70 % on ``demo_segnet_mtan_famo`` parents sparsity-trained in each mode of D23
  (``decoupled``, the published method and the demo's default; ``authors``, the study's; ``sgd``), or the runs given
  with ``--netslim-run MODE=RUN_ID``;
- HRank rounds 1 and 2 (50 / 75 %) and L1-norm filters at 70 % on a ``demo_segnet_mtan`` parent (``--hrank-run``),
  ranks on its first 256 training images, as the demo preset estimates them.

Pruning only changes the architecture here (no fine-tuning: latency and MACs do not depend on it). For every
pruned model: the share of output channels removed per module kind (trunk encoder and decoder, shared attention
convs, attention hidden channels, heads; ``mtlx_core.prune.record``), parameters, MACs and latency at batch 1 and
8 (``--size`` for another input than the demo's 64x96), eager (``model.eval()``) and *deployed*, the headline
(``mtlx_core.prune.deploy``: graph captured with ``make_fx``, BN folded into the convolutions, TorchScript
trace + freeze, the same for dense and pruned). Each value is the median over ``--repeats`` forward passes, every
model and form timed interleaved in one loop, so that load from other processes hits them alike. Goals (issue
19): the decoupled mode at least 2x faster and 2.5x fewer MACs than dense at 70 %, HRank 75 % at least 2x; the
authors' mode and L1-norm filters are reported as measured. The last line reads
``netslim70_latency_ratio=X netslim70_macs_ratio=Y netslim70_authors_latency_ratio=Z hrank75_latency_ratio=W
l1filter70_latency_ratio=V``: dense / pruned, the latency ratio the smaller of the two batch sizes' deployed ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable, Iterable

import torch
from torch import nn

from mtlx_core.models.surgery import count_macs, count_params
from mtlx_core.prune import channel_plan, hrank_keep, l1_filter_keep, netslim_keep, netslim_training, prune_channels
from mtlx_core.prune.deploy import DEPLOYMENT, deploy
from mtlx_core.prune.hrank import feature_map_stats
from mtlx_core.prune.latency import median_latency
from mtlx_core.prune.record import MODULE_KINDS, channels_by_kind
from mtlx_core.runs import DEFAULT_MODELS_DIR, load_run
from mtlx_core.train import TrainConfig, resolve_config, train
from mtlx_core.train.config import BN_L1_MODES, DEMO_SYNTH, PRESETS

INPUT = (3, DEMO_SYNTH["height"], DEMO_SYNTH["width"])  # default input shape; --size gives another
BATCHES = (1, 8)
RANK_IMAGES = 256


def parent(cfg: TrainConfig, run: str | None, models_dir: str) -> tuple[nn.Module, TrainConfig, str]:
    """A trained dense run: ``run`` when given (it must be of ``cfg``'s preset), else ``cfg`` trained (or
    reused)."""
    run_id = run or train(cfg, models_dir, progress=False).run_id
    loaded = load_run(run_id, models_dir)
    got = TrainConfig.from_dict(loaded.config["train"])
    if got.preset != cfg.preset or loaded.config.get("kind", "train") != "train":
        raise SystemExit(f"run {run_id} is not a dense {cfg.preset} training run")
    return loaded.model.eval(), got, run_id


def rank_images(cfg: TrainConfig) -> list[torch.Tensor]:
    from mtlx_core.train.batches import training_batches
    from mtlx_core.train.loop import prepare_data

    train_ds, _ = prepare_data(cfg)
    n = min(RANK_IMAGES, len(train_ds))
    out, left = [], n
    for b in training_batches(train_ds, cfg.batch_size, cfg.seed, 0, -(-n // cfg.batch_size), None):
        out.append(b["image"][:left])
        left -= out[-1].shape[0]
    return out


def hrank_step(model: nn.Module, images: list[torch.Tensor]) -> nn.Module:
    plan = channel_plan(model)
    stats = feature_map_stats(model, plan, images)
    return prune_channels(model, plan, hrank_keep(plan, stats.ranks, stats.activations)).eval()


def latencies(fns: dict[str, Callable[[torch.Tensor], object]], batch: int, repeats: int,
              shape: tuple[int, ...]) -> dict[str, float]:
    """Median seconds per forward pass of every callable, timed interleaved (``mtlx_core.prune.latency``)."""
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0))
    return median_latency(fns, x, repeats, warmup=3)


def build(args: argparse.Namespace) -> tuple[dict[str, nn.Module], dict[str, str], dict[str, str]]:
    """Models by name, each pruned model's dense reference, and where each parent came from."""
    runs = dict(item.split("=", 1) for item in args.netslim_run)
    unknown = set(runs) - set(BN_L1_MODES)
    if unknown:
        raise SystemExit(f"--netslim-run MODE=RUN: unknown modes {sorted(unknown)}; valid: {', '.join(BN_L1_MODES)}")
    famo = PRESETS["demo_segnet_mtan_famo"]
    models: dict[str, nn.Module] = {}
    ref: dict[str, str] = {}
    source: dict[str, str] = {}
    for mode in ("decoupled", "authors", "sgd"):  # BN_L1_MODES, the dense reference (decoupled parent) first
        cfg = resolve_config(famo.preset, **netslim_training(famo, mode))
        model, got, run_id = parent(cfg, runs.get(mode), args.models_dir)
        if got.bn_l1_mode != mode or got.bn_l1 <= 0:
            raise SystemExit(f"run {run_id} was not sparsity-trained in the {mode} mode")
        if mode == "decoupled":
            models["netslim/dense"] = model
        plan = channel_plan(model)
        name = "netslim70" if mode == "decoupled" else f"netslim70_{mode}"
        models[name] = prune_channels(model, plan, netslim_keep(model, plan, 0.7)).eval()
        ref[name], source[name] = "netslim/dense", run_id
    model, cfg, run_id = parent(dataclasses.replace(PRESETS["demo_segnet_mtan"], device="cpu"), args.hrank_run,
                                args.models_dir)
    images = rank_images(cfg)
    models["mtan/dense"] = model
    models["hrank50"] = hrank_step(model, images)
    models["hrank75"] = hrank_step(models["hrank50"], images)
    plan = channel_plan(model)
    models["l1filter70"] = prune_channels(model, plan, l1_filter_keep(model, plan, 0.7)).eval()
    for name in ("hrank50", "hrank75", "l1filter70"):
        ref[name], source[name] = "mtan/dense", run_id
    return models, ref, source


def main(argv: Iterable[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (fixed for all models)")
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("--netslim-run", action="append", default=[], metavar="MODE=RUN",
                    help="a demo_segnet_mtan_famo run sparsity-trained in MODE (decoupled, authors, sgd)")
    ap.add_argument("--hrank-run", help="a trained demo_segnet_mtan run (HRank and L1-norm filters)")
    ap.add_argument("--models-dir", default=str(DEFAULT_MODELS_DIR), help="where parents are found or trained")
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input size (default: the demo's; "
                    "SegNet-MTAN needs multiples of 32)")
    args = ap.parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    shape = (3, *args.size) if args.size else INPUT
    torch.set_num_threads(args.threads)
    models, ref, source = build(args)
    print(f"CPU latency at {shape[1]}x{shape[2]}, {args.threads} thread(s), median of {args.repeats} interleaved "
          f"repeats, torch {torch.__version__}; deployed = {DEPLOYMENT}, same for dense and pruned")
    fns: dict[str, Callable[[torch.Tensor], object]] = {}
    for k, m in models.items():
        fns[f"{k}/eager"] = m.eval()
        fns[f"{k}/deployed"] = deploy(m, torch.zeros(1, *shape))
    lat = {b: latencies(fns, b, args.repeats, shape) for b in BATCHES}
    print(f"\n{'model':>20} {'params':>9} {'MACs':>12} {'b1 eager':>9} {'b1 depl.':>9} {'b8 eager':>9} "
          f"{'b8 depl.':>9} {'params x':>8} {'MACs x':>7} {'lat x b1':>8} {'lat x b8':>8}  parent run")
    ratio: dict[str, float] = {}
    macs_ratio: dict[str, float] = {}
    for k, m in models.items():
        d = ref.get(k, k)
        p, macs = count_params(m), count_macs(m, shape)
        r = {b: lat[b][f"{d}/deployed"] / lat[b][f"{k}/deployed"] for b in BATCHES}
        ratio[k], macs_ratio[k] = min(r.values()), count_macs(models[d], shape) / macs
        print(f"{k:>20} {p:>9,} {macs:>12,} " + " ".join(f"{1e3 * lat[b][f'{k}/{f}']:>9.2f}" for b in BATCHES
                                                        for f in ("eager", "deployed"))
              + f" {count_params(models[d]) / p:>8.2f} {macs_ratio[k]:>7.2f} {r[1]:>8.2f} {r[8]:>8.2f}  "
              f"{source.get(k, '')}")
    print(f"\nshare of output channels removed per module kind (dense -> pruned)\n{'model':>20} "
          + " ".join(f"{label:>24}" for label in MODULE_KINDS.values()))
    for k, m in models.items():
        if k not in ref:
            continue
        dense = models[ref[k]]
        shares = {s.kind: s for s in channels_by_kind(dense, m, channel_plan(dense))}
        cells = [f"{100 * shares[kind].removed:5.1f} % ({shares[kind].before}->{shares[kind].after})"
                 if kind in shares else "-" for kind in MODULE_KINDS]
        print(f"{k:>20} " + " ".join(f"{c:>24}" for c in cells))
    print(f"netslim70_latency_ratio={ratio['netslim70']:.2f} netslim70_macs_ratio={macs_ratio['netslim70']:.2f} "
          f"netslim70_authors_latency_ratio={ratio['netslim70_authors']:.2f} "
          f"hrank75_latency_ratio={ratio['hrank75']:.2f} l1filter70_latency_ratio={ratio['l1filter70']:.2f}")


if __name__ == "__main__":
    main()
