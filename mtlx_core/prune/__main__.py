"""``python -m mtlx_core.prune --from RUN_ID --method M --sparsity S``: prune a run and fine-tune it.

The new run goes into the models folder; its id is the last line of stdout. The same command resumes an
interrupted run or returns the finished one. Methods: disparse (--variant static or magnitude), netslim
(--netslim-mode decoupled, authors or sgd: the mode the parent was sparsity-trained in, D23; default: the
parent's), hrank, l1_filter. HRank sparsities are round results (0.5, 0.75, 0.875, 0.9375); 0.75 is round 2 on
top of the 0.5 run, which is reused from the store or created first.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mtlx_core.data.dataset import DatasetError
from mtlx_core.plugins import add_plugin_argument, load_cli_plugins
from mtlx_core.runs import DEFAULT_MODELS_DIR, RunError

logger = logging.getLogger("mtlx_core.prune")


def _epilog() -> str:
    from mtlx_core.prune.presets import PRUNE_PRESETS

    return ("presets (chosen from the parent's training preset and the method unless --preset is given):\n"
            + "\n".join(f"  {p.describe()}" for p in PRUNE_PRESETS.values()))


def _methods() -> list[str]:
    from mtlx_core.prune.registry import PRUNING_METHODS

    return list(PRUNING_METHODS)


def _variant(args: argparse.Namespace) -> str | None:
    if args.netslim_mode is None:
        return args.variant
    if args.method != "netslim":
        raise ValueError(f"--netslim-mode is an option of --method netslim, not {args.method!r}")
    if args.variant is not None and args.variant != args.netslim_mode:
        raise ValueError(f"--variant {args.variant} and --netslim-mode {args.netslim_mode} disagree")
    return args.netslim_mode


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mtlx_core.prune", description=__doc__, epilog=_epilog(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="parent", required=True, metavar="RUN_ID", help="dense run to prune")
    p.add_argument("--method", required=True, help="a registered method: " + ", ".join(_methods()))
    p.add_argument("--sparsity", required=True, type=float, help="fraction in (0, 1), e.g. 0.7")
    p.add_argument("--variant", help="DiSparse: static (default) or magnitude; Network Slimming: its mode")
    p.add_argument("--netslim-mode", help="Network Slimming's sparsity-training mode (D23): decoupled, authors or "
                   "sgd (the same as --variant; default: the parent's mode)")
    p.add_argument("--finetune-iters", type=int, help="override the preset's fine-tuning iterations")
    p.add_argument("--preset", help="pruning preset (default: the one matching the parent's training preset)")
    p.add_argument("--data", dest="data_root", help="dataset folder, if not where the parent was trained")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1, ... (default: the parent's setting)")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_plugin_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from mtlx_core.prune.pipeline import check_request, prune_run

    try:
        load_cli_plugins(args)
        variant = _variant(args)
        check_request(args.method, args.sparsity, variant)
        result = prune_run(args.parent, args.method, args.sparsity, variant=variant,
                           finetune_iterations=args.finetune_iters, preset=args.preset, models_dir=args.models_dir,
                           device=args.device, data_root=args.data_root, progress=not args.no_progress)
    except (DatasetError, RunError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    sys.stdout.write(result.run_id + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
