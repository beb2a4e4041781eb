"""``python -m mtlx_core.precompute --preset NAME``: build the study store the app reads.

Trains and prunes the preset's models (run folders in --models-dir, reused when present), explains them with
Grad-CAM and the preset's other explainers (--explainers) and measures the faithfulness metrics, writing
everything into one DuckDB file (--store; default $MTLX_STORE or models_store/study.duckdb). Resumable and
idempotent: run the same command again after an interruption. While it runs, the store path holds the last
published snapshot (after every arm), readable by the app.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from mtlx_core.data.dataset import DatasetError
from mtlx_core.explain.explainers import EXPLAINERS, explainer_names
from mtlx_core.faithfulness.registry import METRICS, metric_names
from mtlx_core.plugins import add_plugin_argument, load_cli_plugins
from mtlx_core.precompute.executors import (
    EXECUTORS,
    GPU_KINDS,
    RAY_HINT,
    ExecutorSettings,
    UnitsFailedError,
    parse_shares,
)
from mtlx_core.precompute.presets import STUDY_PRESETS, describe, get_study_preset
from mtlx_core.runs import DEFAULT_MODELS_DIR, RunError
from mtlx_core.store.errors import StoreError
from mtlx_core.store.writer import StoreConflictError

logger = logging.getLogger("mtlx_core.precompute")

DEFAULT_STORE = DEFAULT_MODELS_DIR / "study.duckdb"


def default_store() -> Path:
    return Path(os.environ.get("MTLX_STORE") or DEFAULT_STORE)


def parse_data(values: list[str]) -> dict[str, str]:
    """``--data PATH`` (every arm) or ``--data DATASET=PATH`` (arms on that dataset)."""
    out: dict[str, str] = {}
    for v in values:
        key, sep, path = v.partition("=")
        if sep and key and "/" not in key:
            out[key] = path
        else:
            out["*"] = v
    return out


def build_parser() -> argparse.ArgumentParser:
    epilog = "presets:\n" + "\n".join(describe(p) for p in STUDY_PRESETS.values())
    p = argparse.ArgumentParser(prog="python -m mtlx_core.precompute", description=__doc__, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", help="one of: " + ", ".join(STUDY_PRESETS))
    p.add_argument("--arm", action="append", default=[], metavar="ARM_ID",
                   help="only these arms of the preset (repeatable): one shard of a distributed run")
    p.add_argument("--merge", nargs="+", type=Path, metavar="SHARD",
                   help="instead of computing: add the finished units of these stores (shards) to --store")
    p.add_argument("--store", type=Path, default=None,
                   help=f"DuckDB file to build (default: $MTLX_STORE or {DEFAULT_STORE})")
    p.add_argument("--images", type=int, help="validation images per arm (default: the preset's)")
    p.add_argument("--seeds", type=int, help="dense models per arm, trained with different seeds and each pruned "
                   "(replicates, D25; default: the preset's, 1 except demo_seeds); more seeds add to a store")
    p.add_argument("--layers", nargs="+", metavar="LAYER",
                   help="also explain at these registered Grad-CAM layers (layer ablation; 'all' = every registered "
                        "layer of each architecture; adds rows to an existing store); default: the preset's")
    p.add_argument("--metrics", metavar="NAMES",
                   help="faithfulness metrics, comma-separated, or 'all' (default: the preset's); valid: "
                        + ", ".join(METRICS) + ". Part of the store's settings: another selection needs "
                        "another --store")
    p.add_argument("--explainers", metavar="NAMES",
                   help="explainers at the primary layers, comma-separated, or 'all' (default: the preset's; "
                        "gradcam must be among them); valid: " + ", ".join(EXPLAINERS) + ". Part of the store's "
                        "settings: another selection needs another --store")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    p.add_argument("--data", action="append", default=[], metavar="[DATASET=]PATH",
                   help="dataset folder for every arm, or for the arms of one dataset (repeatable)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--publish-every", type=float, help="seconds between snapshots (besides every arm)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    g = p.add_argument_group("executor (docs/cluster.md)")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local (default): every unit in this process, one after the other; processes: the same units "
                        "in --workers processes of this machine (one torch thread each unless --threads); ray: as "
                        'Ray tasks (pip install "mtlx[ray]"); this process is always the only writer of the store')
    g.add_argument("--address", help="ray: connect to this cluster (auto, or HOST:PORT); default: start a local "
                                     "Ray instance with --workers CPUs")
    g.add_argument("--workers", type=int, help="processes: worker processes; ray without --address: CPUs of the local "
                                               "Ray instance, i.e. units at once on a CPU-only machine (default: the "
                                               "machine's cores)")
    g.add_argument("--gpus", nargs="+", default=[], metavar="KIND=SHARE",
                   help="ray: GPUs per unit kind (" + ", ".join(GPU_KINDS) + "), fractions pack several units on "
                        "one GPU, e.g. train=1 prune=1 explain=0.25 (default: 1 when the cluster has GPUs); with "
                        "--plan, a bare number N plans for N GPUs")
    g.add_argument("--cpus", nargs="+", default=[], metavar="KIND=N", help="ray: CPUs per unit kind (default 1)")
    g.add_argument("--retries", type=int, default=3,
                   help="ray: times a unit whose worker died is retried (default 3); training and pruning resume "
                        "from their checkpoints")
    g.add_argument("--plan", action="store_true",
                   help="print the unit DAG, its critical path and the predicted wall time on --gpus N GPUs (several "
                        "numbers: each), with and without packing, from the --store's measured unit times when it "
                        "exists, else estimated; computes nothing")
    g.add_argument("--plan-device", choices=("gpu", "cpu"), default="gpu",
                   help="--plan without a store: estimate unit times for this device class (default gpu)")
    add_plugin_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    parser = build_parser()
    args = parser.parse_args(argv)
    store = args.store or default_store()
    if args.merge:
        return _merge(store, args.merge)
    if not args.preset:
        parser.error("--preset is required (or --merge)")
    try:
        load_cli_plugins(args)
        preset = get_study_preset(args.preset)
        if args.layers:
            preset = dataclasses.replace(preset, explain=dataclasses.replace(preset.explain,
                                                                             ablation_layers=tuple(args.layers)))
        if args.metrics:
            names = tuple(metric_names(args.metrics))
            preset = dataclasses.replace(preset, explain=dataclasses.replace(preset.explain, metrics=names))
        if args.explainers:
            chosen = tuple(explainer_names([args.explainers]))
            preset = dataclasses.replace(preset, explain=dataclasses.replace(preset.explain, explainers=chosen))
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        counts = [int(v) for v in args.gpus if v.isdigit()]
        shares = parse_shares([v for v in args.gpus if not v.isdigit()], "--gpus")
        if args.plan:
            from mtlx_core.precompute.plan_mode import plan_report

            sys.stdout.write(plan_report(preset, counts or [1], shares, store, args.images, args.seeds,
                                         args.arm or None, args.plan_device) + "\n")
            return 0
        if counts:
            raise ValueError(f"--gpus {counts[0]}: a GPU count is for --plan; the ray executor takes KIND=SHARE "
                             "(e.g. train=1 explain=0.25) and uses the cluster's GPUs")
        executor = ExecutorSettings(args.executor, args.address, args.workers, shares,
                                    parse_shares(args.cpus, "--cpus"), args.retries)
        from mtlx_core.precompute.runner import run_precompute

        run_precompute(preset, store, args.models_dir, device=args.device, images=args.images,
                       data=parse_data(args.data), progress=not args.no_progress,
                       publish_every_s=args.publish_every, arms=args.arm or None, seeds=args.seeds,
                       executor=executor, threads=args.threads)
    except UnitsFailedError as exc:
        logger.error("%s", exc)
        return 3
    except (DatasetError, RunError, StoreError, StoreConflictError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    except RuntimeError as exc:
        if str(exc) != RAY_HINT:
            raise
        logger.error("%s", exc)
        return 2
    sys.stdout.write(f"{store}\n")
    return 0


def _merge(store: Path, shards: list[Path]) -> int:
    from mtlx_core.store.writer import StoreWriter

    try:
        missing = [s for s in shards if not s.is_file()]
        if missing:
            raise StoreError(f"shard(s) {', '.join(map(str, missing))} do not exist")
        w = StoreWriter.open(store)
        try:
            for shard in shards:
                logger.info("merged %d new units from %s", w.merge(shard), shard)
            w.publish()
        except BaseException:
            w.close()
            raise
        w.close(remove_work=True)
    except (StoreError, StoreConflictError) as exc:
        logger.error("%s", exc)
        return 2
    sys.stdout.write(f"{store}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
