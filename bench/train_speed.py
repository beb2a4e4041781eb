"""Training throughput (images/s) of each preset's model at its own size on this machine.

For every training preset: build the model, draw a random batch at the preset's input size, run warm-up
steps, then time full training steps (forward, task losses, weighting backward incl. FAMO's re-forward,
optimizer step). Paper-size models on a CPU are timed with a small batch (``--paper-batch``) and the
images/s is reported per image; on a GPU pass ``--device cuda`` and the preset batch size is used.

    python bench/train_speed.py [--device cpu|cuda] [--steps 3] [--only demo|paper] [--threads 2]

The demo budget (issue 3) is two minutes on two idle CPU cores: run ``--only demo --threads 2`` on an idle
machine; "est. total" is s/step x the preset's iterations (training steps only: no data loading, no evaluation).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from mtlx_core.data.layout import get_dataset_spec
from mtlx_core.models import build_model
from mtlx_core.tasks import build_tasks
from mtlx_core.train.config import DEMO_SYNTH, PRESETS, TrainConfig
from mtlx_core.weighting import Weighting, build_weighting


def input_size(cfg: TrainConfig) -> tuple[int, int]:
    if cfg.synth is not None:
        return cfg.synth["height"], cfg.synth["width"]
    spec = get_dataset_spec(cfg.dataset)
    return spec.height, spec.width


def fake_batch(cfg: TrainConfig, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    spec = get_dataset_spec(cfg.dataset)
    h, w = input_size(cfg)
    g = torch.Generator().manual_seed(0)
    out = {"image": torch.rand(batch, 3, h, w, generator=g)}
    out["segmentation"] = torch.randint(-1, spec.num_classes, (batch, h, w), generator=g)
    out["depth"] = torch.rand(batch, 1, h, w, generator=g) * 5
    out["normals"] = torch.nn.functional.normalize(torch.randn(batch, 3, h, w, generator=g), dim=1)
    return {k: v.to(device) for k, v in out.items()}


def time_preset(cfg: TrainConfig, batch: int, steps: int, device: torch.device) -> tuple[float, float | None]:
    """Seconds per step and peak GPU memory (GiB, CUDA only)."""
    spec = get_dataset_spec(cfg.dataset)
    tasks = build_tasks(spec, cfg.tasks)
    model = build_model(cfg.arch, {n: t.out_channels for n, t in tasks.items()}, cfg.width,
                        **cfg.arch_kwargs).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    weighting = build_weighting(cfg.weighting, list(tasks), **cfg.weighting_kwargs)
    needs_update = type(weighting).update is not Weighting.update
    b = fake_batch(cfg, batch, device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = model(b["image"])
        weighting.backward(torch.stack([tasks[n].loss(out[n], b[n]) for n in tasks]))
        opt.step()
        if needs_update:
            with torch.no_grad():
                out = model(b["image"])
                weighting.update(torch.stack([tasks[n].loss(out[n], b[n]) for n in tasks]))

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return sorted(times)[len(times) // 2], peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--paper-batch", type=int, default=2, help="batch for paper-size models on CPU")
    p.add_argument("--only", choices=["demo", "paper"])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device={device} threads={torch.get_num_threads()} demo data {DEMO_SYNTH['height']}x{DEMO_SYNTH['width']} "
          f"load average {load:.2f} (timings are inflated when other processes compete for the cores)")
    print(f"{'preset':30s} {'input':>9s} {'batch':>5s} {'s/step':>8s} {'images/s':>9s} {'est. total':>11s} peak_GiB")
    for name, cfg in PRESETS.items():
        paper = cfg.synth is None
        if args.only and args.only != ("paper" if paper else "demo"):
            continue
        batch = cfg.batch_size if (not paper or device.type == "cuda") else min(cfg.batch_size, args.paper_batch)
        sec, peak = time_preset(cfg, batch, args.steps, device)
        h, w = input_size(cfg)
        total = sec * cfg.iterations * (cfg.batch_size / batch)
        peak_s = f"{peak:.2f}" if peak is not None else "-"
        total_s = f"{total:9.0f} s" if total < 3600 else f"{total / 3600:9.2f} h"
        print(f"{name:30s} {h:4d}x{w:<4d} {batch:5d} {sec:8.3f} {batch / sec:9.1f} {total_s:>11s} {peak_s}")


if __name__ == "__main__":
    main()
