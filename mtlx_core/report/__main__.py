"""``python -m mtlx_core.report --store S --out DIR [--format md|csv|parquet]``: the verdict's tables, figures
and manifest (``docs/verdict.md``). The last line printed is the report folder."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from mtlx_core.plugins import add_plugin_argument, load_cli_plugins
from mtlx_core.report.build import FORMATS, write_report
from mtlx_core.stats.verdict import VerdictSettings
from mtlx_core.store.errors import StoreError
from mtlx_core.store.reader import store_path
from mtlx_core.store.verdict_data import VALUES, VARIANT_CHOICES

logger = logging.getLogger("mtlx_core.report")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mtlx_core.report", description=__doc__)
    p.add_argument("--store", type=Path, help="study store (default: $MTLX_STORE or models_store/study.duckdb)")
    p.add_argument("--out", type=Path, required=True, help="report folder (created; files in it are replaced)")
    p.add_argument("--format", default="csv", choices=FORMATS,
                   help="tables as csv (default) or parquet; md: csv tables plus report.md")
    p.add_argument("--value", default="score_norm", choices=VALUES,
                   help="score behind the margins: score_norm (default, D24) or the metric's own score")
    p.add_argument("--variants", default="default", choices=VARIANT_CHOICES,
                   help="each metric's default variant (default) or every stored variant")
    p.add_argument("--delta-share", type=float, default=0.1,
                   help="TOST margin: this share of |mean reference margin| (default 0.1)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--pareto-metric", help="faithfulness metric of the Pareto views (default: the first, IROF)")
    p.add_argument("--no-sensitivity", action="store_true",
                   help="skip the sensitivity analysis on the (image, target) pairs both models have")
    add_plugin_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        load_cli_plugins(args)
        settings = VerdictSettings(alpha=args.alpha, delta_share=args.delta_share, n_boot=args.n_boot,
                                   seed=args.seed)
        res = write_report(store_path(args.store), args.out, args.format, settings, args.value, args.variants,
                           args.pareto_metric, sensitivity=not args.no_sensitivity)
    except (StoreError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    logger.info("report of %d files written to %s in %.1f s", len(res.files), res.folder, time.perf_counter() - t0)
    sys.stdout.write(f"{res.folder}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
