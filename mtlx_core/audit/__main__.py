"""``python -m mtlx_core.audit``: did pruning change the explanations of your own multi-task model?

Checks every checkpoint against the registered model (``--plugin`` / entry points / ``MTLX_PLUGINS``), imports
the dense one and every pruned one as run folders (``--models-dir``; default ``<store folder>/<store name>_models``),
measures task metrics on the data's validation split, parameters, MACs, latency and measured sparsity, explains
every model with Grad-CAM, scores the explanations with the faithfulness metrics and writes the verdict of each
pruned model against the dense one into a store the app opens (``MTLX_STORE=S streamlit run app.py``). Bad input
exits with code 2 and writes nothing; an interrupted audit resumes when the same command is run again.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mtlx_core.data.dataset import DatasetError
from mtlx_core.data.layout import DATASETS
from mtlx_core.faithfulness.registry import METRICS, metric_names
from mtlx_core.plugins import add_plugin_argument
from mtlx_core.runs import RunError
from mtlx_core.store.errors import StoreError
from mtlx_core.store.writer import StoreConflictError

logger = logging.getLogger("mtlx_core.audit")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mtlx_core.audit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_plugin_argument(p)
    p.add_argument("--model", required=True, help="registered model name (mtlx_core.plugins.register_model)")
    p.add_argument("--data", required=True, type=Path, help="dataset folder in the project's format (val split)")
    p.add_argument("--dataset", required=True, choices=list(DATASETS), help="dataset kind of --data")
    p.add_argument("--tasks", required=True, help="comma-separated tasks, e.g. segmentation,depth")
    p.add_argument("--dense", required=True, type=Path, help="checkpoint of the dense model")
    p.add_argument("--pruned", required=True, action="append", type=Path, metavar="CKPT",
                   help="checkpoint of a pruned model (repeatable): a plain or structurally pruned state dict, or "
                        "torch.nn.utils.prune's (weight_orig / weight_mask)")
    p.add_argument("--store", required=True, type=Path, help="DuckDB store to write (the app opens it)")
    p.add_argument("--images", type=int, help="validation images explained (default 32)")
    p.add_argument("--metrics", metavar="NAMES", help="faithfulness metrics, comma-separated, or 'all' (default: "
                   "the demo's family); valid: " + ", ".join(METRICS))
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument of the model's factory (repeatable; JSON values: 8, 0.5, true)")
    p.add_argument("--models-dir", type=Path, help="where the imported run folders go")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    from mtlx_core.audit import AuditInputError, AuditRequest, parse_model_args, run_audit

    try:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        req = AuditRequest(
            model=args.model, data=args.data, dataset=args.dataset,
            tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()), dense=args.dense,
            pruned=tuple(args.pruned), store=args.store, plugins=tuple(args.plugin),
            model_kwargs=parse_model_args(args.model_arg), models_dir=args.models_dir, images=args.images,
            metrics=tuple(metric_names(args.metrics)) if args.metrics else None, device=args.device,
            progress=not args.no_progress)
        result = run_audit(req)
    except (AuditInputError, DatasetError, RunError, StoreError, StoreConflictError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    plugins = f"MTLX_PLUGINS={','.join(args.plugin)} " if args.plugin else ""
    logger.info("audit of %s: dense run %s, pruned runs %s; open it with %sMTLX_STORE=%s streamlit run app.py",
                result.arm_id, result.dense_id, ", ".join(result.pruned_ids), plugins, args.store)
    sys.stdout.write(f"{args.store}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
