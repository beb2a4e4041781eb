"""Speed of the synthetic dataset generator on ONE core: rendering alone and rendering + writing .npy.

Usage: python bench/synth_speed.py [--frames 1000] [--height 96] [--width 128]
The budget (issue) is 1000 frames at 96x128 in at most 30 s on one core, i.e. >= 33.3 frames/s.
The last line is ``synth_frames_per_s=X`` (the full generate_synth rate).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported (the generator uses numpy only, no torch)

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from mtlx_core.data.synth import generate_synth, render_synth_frame  # noqa: E402

BUDGET_FRAMES_PER_S = 1000 / 30.0


def _pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to cpu {cpu}"
    return "not pinned (no sched_setaffinity)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=1000, help="frames to generate (train split)")
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--render-frames", type=int, default=200, help="frames for the render-only timing")
    args = p.parse_args(argv)
    print(_pin_one_core())

    n_render = min(args.render_frames, args.frames)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n_render):
        render_synth_frame(0, "train", i, args.height, args.width)
    render_wall, render_cpu = time.perf_counter() - t0, time.process_time() - c0

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "synth"
        t0, c0 = time.perf_counter(), time.process_time()
        summary = generate_synth(out, args.frames, 0, args.height, args.width, seed=0, progress=False)
        gen_wall, gen_cpu = time.perf_counter() - t0, time.process_time() - c0
        size_mb = sum(f.stat().st_size for f in out.rglob("*.npy")) / 2**20
    render_fps, gen_fps = n_render / render_wall, args.frames / gen_wall
    print(f"frames={args.frames} size={args.height}x{args.width} written={size_mb:.1f} MiB "
          f"depth_range={np.round(summary['depth_range'], 2).tolist()}")
    print(f"render only:      {render_fps:8.1f} frames/s wall ({n_render / render_cpu:.1f} per cpu-s)")
    print(f"render + write:   {gen_fps:8.1f} frames/s wall ({args.frames / gen_cpu:.1f} per cpu-s), "
          f"{gen_wall:.1f} s in all")
    print(f"write share of the cpu time: {1 - (args.frames / gen_cpu) / (n_render / render_cpu):.2f}")
    print(f"ratio to the budget ({BUDGET_FRAMES_PER_S:.1f} frames/s): {gen_fps / BUDGET_FRAMES_PER_S:.2f} wall, "
          f"{args.frames / gen_cpu / BUDGET_FRAMES_PER_S:.2f} cpu (wall < cpu rate means the core was shared)")
    print(f"cpu seconds per 1000 frames incl. writing: {1000 * gen_cpu / args.frames:.1f} (budget 30)")
    print(f"synth_frames_per_s={gen_fps:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
