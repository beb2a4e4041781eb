"""``python -m mtlx_core.train --preset NAME [overrides]``: train a multi-task model into models_store/."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from mtlx_core.data.dataset import DatasetError
from mtlx_core.plugins import add_plugin_argument, load_cli_plugins
from mtlx_core.runs import DEFAULT_MODELS_DIR, RunError
from mtlx_core.train.config import PRESETS, resolve_config

logger = logging.getLogger("mtlx_core.train")


def _preset_help() -> str:
    lines = []
    for name, p in PRESETS.items():
        sched = f", lr x{p.lr_gamma:g} every {p.lr_step}" if p.lr_step else ""
        lines.append(f"  {name:30s} {p.arch} w={p.width:g} on {p.dataset} ({'+'.join(p.tasks)}), {p.weighting}, "
                     f"lr {p.lr:g}{sched}, batch {p.batch_size}, {p.iterations} it, aug {'on' if p.augment else 'off'}")
    return "presets:\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mtlx_core.train", description=__doc__, epilog=_preset_help(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, help="one of: " + ", ".join(PRESETS))
    p.add_argument("--data", dest="data_root", help="dataset folder in the MTAN layout")
    p.add_argument("--iterations", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--width", type=float, help="channel width multiplier")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int)
    p.add_argument("--tasks", nargs="+", help="subset of the preset's tasks")
    p.add_argument("--num-workers", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--netslim-mode", help="sparsity-train for Network Slimming in this mode (D23): decoupled, "
                   "authors or sgd (sets bn_l1, bn_l1_mode, bn_l1_scope and the optimizer)")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_plugin_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        load_cli_plugins(args)
        cfg = resolve_config(args.preset, data_root=args.data_root, iterations=args.iterations,
                             batch_size=args.batch_size, lr=args.lr, width=args.width, device=args.device,
                             seed=args.seed, tasks=args.tasks, num_workers=args.num_workers,
                             eval_every=args.eval_every, checkpoint_every=args.checkpoint_every)
        if args.netslim_mode is not None:
            from mtlx_core.prune.netslim import netslim_training

            cfg = dataclasses.replace(cfg, **netslim_training(cfg, args.netslim_mode))
        from mtlx_core.train.loop import train

        result = train(cfg, args.models_dir, progress=not args.no_progress)
    except (DatasetError, RunError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    sys.stdout.write(result.run_id + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
