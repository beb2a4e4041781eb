"""Train a two-task LR-ASPP briefly on the synthetic rooms, prune it four ways, and audit the checkpoints.

    python examples/own_model/run_example.py                       # demo size (64 x 96 rooms), a few minutes
    python examples/own_model/run_example.py --backbone large --inter-channels 128   # torchvision's LR-ASPP size

Writes ``dense.pt`` and four pruned checkpoints into ``--out`` (Torch-Pruning, saved with ``tp.state_dict``;
``torch.nn.utils.prune`` with its masks; mtlx's L1-norm filters and mtlx's Network Slimming through the derived
channel plan, plain state dicts of the smaller models), then runs ``python -m mtlx_core.audit`` on them (the command is
logged) into ``--out``/audit.duckdb; open it with
``MTLX_PLUGINS=own_model PYTHONPATH=examples/own_model MTLX_STORE=<out>/audit.duckdb streamlit run app.py``.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the example package, when it is not installed
    sys.path.insert(0, str(HERE))

from own_model import MODEL_NAME, build  # noqa: E402
from own_model.recipes import (  # noqa: E402
    init_depth_bias,
    prune_mtlx_l1_filter,
    prune_mtlx_netslim,
    prune_torch_pruning,
    prune_torch_unstructured,
    save_torch_pruning,
    train,
)

from mtlx_core.audit.__main__ import main as audit_main  # noqa: E402
from mtlx_core.data.dataset import MTLDataset  # noqa: E402
from mtlx_core.data.layout import get_dataset_spec  # noqa: E402
from mtlx_core.data.synth import generate_synth  # noqa: E402
from mtlx_core.train.config import DEMO_DATA, DEMO_SYNTH  # noqa: E402

logger = logging.getLogger("run_example")
TASKS = ("segmentation", "depth")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(DEMO_DATA),
                   help="synthetic rooms in the project's format (rendered at demo size when missing)")
    p.add_argument("--out", type=Path, default=HERE / "out", help="checkpoints, the store and its run folders")
    p.add_argument("--backbone", default="small", choices=("large", "small"), help="MobileNetV3 variant")
    p.add_argument("--width", type=float, default=1.0, help="MobileNetV3 width multiplier")
    p.add_argument("--inter-channels", type=int, default=64, help="channels of the LR-ASPP heads")
    p.add_argument("--iterations", type=int, default=1000, help="training steps of the dense model")
    p.add_argument("--finetune", type=int, default=100, help="fine-tuning steps of each pruned model")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (fine-tuning: a tenth)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batches")
    p.add_argument("--tp-ratio", type=float, default=0.5, help="Torch-Pruning: share of channels removed")
    p.add_argument("--unstructured", type=float, default=0.7, help="torch.nn.utils.prune: share of weights zeroed")
    p.add_argument("--l1-filter", type=float, default=0.3, help="mtlx L1-norm filters: share of channels removed "
                   "(0: skip)")
    p.add_argument("--netslim", type=float, default=0.5, help="mtlx Network Slimming: share of the BN-rated "
                   "channels removed (0: skip)")
    p.add_argument("--slim-steps", type=int, default=300, help="Network Slimming: sparsity-training steps (BN L1) "
                   "from the dense weights, at --lr")
    p.add_argument("--images", type=int, default=32, help="validation images the audit explains")
    p.add_argument("--metrics", help="faithfulness metrics of the audit (default: its own)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    return p


def ensure_data(root: Path) -> Path:
    if not (root / "val").is_dir():
        if root != Path(DEMO_DATA):
            raise SystemExit(f"--data {root} has no val/ split")
        logger.info("rendering the synthetic rooms into %s", root)
        generate_synth(root, **DEMO_SYNTH, progress=False)
    return root


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    data = ensure_data(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    spec = get_dataset_spec("synth")
    channels = {"segmentation": spec.num_classes, "depth": 1}
    model_args = {"backbone": args.backbone, "width": args.width, "inter_channels": args.inter_channels}
    train_ds = MTLDataset(data, spec, "train", tasks=TASKS)
    example = train_ds[0]["image"][None]

    torch.manual_seed(args.seed)
    net = build(channels, **model_args)
    init_depth_bias(net, train_ds)
    train(net, train_ds, args.iterations, args.lr, seed=args.seed)
    ckpts = {"dense": args.out / "dense.pt"}
    torch.save(net.state_dict(), ckpts["dense"])
    pruned = {"torch_pruning": prune_torch_pruning(net, args.tp_ratio, example),
              "torch_prune_l1": prune_torch_unstructured(net, args.unstructured)}
    if args.l1_filter > 0:
        pruned["mtlx_l1_filter"] = prune_mtlx_l1_filter(net, MODEL_NAME, channels, args.l1_filter, example,
                                                        model_args)
    if args.netslim > 0:
        pruned["mtlx_netslim"], _ = prune_mtlx_netslim(net, MODEL_NAME, channels, args.netslim, example, model_args,
                                                       train_ds, args.slim_steps, args.lr, seed=args.seed + 2)
    for name, model in pruned.items():
        logger.info("fine-tuning %s", name)
        train(model, train_ds, args.finetune, args.lr / 10, seed=args.seed + 1)
        ckpts[name] = args.out / f"{name}.pt"
        if name == "torch_pruning":
            save_torch_pruning(model, ckpts[name])
        else:
            torch.save(model.state_dict(), ckpts[name])
    logger.info("trained and pruned in %.0f s", time.monotonic() - t0)

    audit = ["--plugin", "own_model", "--model", MODEL_NAME, "--data", str(data), "--dataset", "synth",
             "--tasks", ",".join(TASKS), "--dense", str(ckpts["dense"]),
             *[x for name in pruned for x in ("--pruned", str(ckpts[name]))],
             "--store", str(args.out / "audit.duckdb"), "--images", str(args.images),
             *[x for k, v in model_args.items() for x in ("--model-arg", f"{k}={v}")],
             *(["--metrics", args.metrics] if args.metrics else [])]
    logger.info("PYTHONPATH=%s python -m mtlx_core.audit %s", HERE, shlex.join(audit))
    t1 = time.monotonic()
    rc = audit_main(audit)
    logger.info("audit finished in %.0f s (exit code %d); everything in %.0f s", time.monotonic() - t1, rc,
                time.monotonic() - t0)
    return rc


if __name__ == "__main__":
    sys.exit(main())
