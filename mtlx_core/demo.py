"""``python -m mtlx_core.demo``: the main job on the embedded synthetic dataset.

Renders the synthetic RGB-D rooms (if missing) and logs their summary; with ``--train`` also trains the three
demo presets (one per row of the study's Table 1) and logs how they compare with trivial predictors.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mtlx_core.data.dataset import DatasetError
from mtlx_core.runs import DEFAULT_MODELS_DIR, RunError
from mtlx_core.train.config import DEMO_DATA, DEMO_SYNTH, PRESETS

logger = logging.getLogger("mtlx_core.demo")

DEMO_PRESETS = ("demo_deeplab", "demo_segnet_mtan_famo", "demo_segnet_mtan")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m mtlx_core.demo", description=__doc__)
    p.add_argument("--data", type=Path, default=Path(DEMO_DATA), help="where the synthetic dataset goes")
    p.add_argument("--train", action="store_true", help="also train the three demo presets")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    args = p.parse_args(argv)
    from mtlx_core.data.synth import generate_synth, summarize_dataset

    try:
        if not args.data.exists():
            generate_synth(args.data, **DEMO_SYNTH)
        summary = summarize_dataset(args.data)
        logger.info("synthetic dataset at %s:\n%s", args.data, json.dumps(summary, indent=2, default=str))
        if args.train:
            from mtlx_core.train import resolve_config, train

            for name in DEMO_PRESETS:
                cfg = resolve_config(name, data_root=str(args.data))
                result = train(cfg, args.models_dir)
                logger.info("%s -> %s", PRESETS[name].preset, result.run_id)
    except (DatasetError, RunError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
