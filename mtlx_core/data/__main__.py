"""``python -m mtlx_core.data {synth,convert-nyuv2,convert-cityscapes,check}``: build and check datasets."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mtlx_core.data.dataset import DatasetError, validate_dataset
from mtlx_core.data.layout import DATASETS
from mtlx_core.plugins import add_plugin_argument, load_cli_plugins

logger = logging.getLogger("mtlx_core.data")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mtlx_core.data", description=__doc__)
    add_plugin_argument(p)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="render the synthetic RGB-D rooms dataset (MTAN NYUv2 layout)")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.add_argument("--n-train", type=int, default=256)
    s.add_argument("--n-val", type=int, default=64)
    s.add_argument("--height", type=int, default=96)
    s.add_argument("--width", type=int, default=128)
    s.add_argument("--seed", type=int, default=0)

    n = sub.add_parser("convert-nyuv2", help="NYUv2 frames (PNG) listed in a CSV manifest -> MTAN layout, 288x384")
    n.add_argument("--manifest", type=Path, required=True,
                   help="CSV with columns split,rgb,depth,label[,normal], paths relative to the CSV")
    n.add_argument("--out", type=Path, required=True)
    n.add_argument("--height", type=int, default=288)
    n.add_argument("--width", type=int, default=384)
    n.add_argument("--overwrite", action="store_true", help="replace an existing output folder")

    c = sub.add_parser("convert-cityscapes", help="Cityscapes leftImg8bit + gtFine (+ disparity) -> MTAN layout")
    c.add_argument("--root", type=Path, required=True,
                   help="folder holding leftImg8bit/, gtFine/ [, disparity/, camera/]")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--height", type=int, default=128)
    c.add_argument("--width", type=int, default=256)
    c.add_argument("--overwrite", action="store_true", help="replace an existing output folder")

    k = sub.add_parser("check", help="validate every frame of a dataset folder")
    k.add_argument("root", type=Path)
    k.add_argument("--dataset", choices=sorted(DATASETS), default="nyuv2")
    return p


def _positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        load_cli_plugins(args)
        if args.command == "synth":
            from mtlx_core.data.synth import generate_synth

            _positive(args, "n_train", "n_val", "height", "width")
            summary = generate_synth(args.out, args.n_train, args.n_val, args.height, args.width, args.seed)
        elif args.command == "convert-nyuv2":
            from mtlx_core.data.convert_nyuv2 import convert_nyuv2

            _positive(args, "height", "width")
            summary = convert_nyuv2(args.manifest, args.out, height=args.height, width=args.width,
                                    overwrite=args.overwrite)
        elif args.command == "convert-cityscapes":
            from mtlx_core.data.convert_cityscapes import convert_cityscapes

            _positive(args, "height", "width")
            summary = convert_cityscapes(args.root, args.out, height=args.height, width=args.width,
                                         overwrite=args.overwrite)
        else:
            summary = {"frames": validate_dataset(args.root, args.dataset), "root": str(args.root)}
    except (DatasetError, ValueError, OSError) as exc:
        logger.error("%s", exc)
        return 2
    logger.info("summary:\n%s", json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
