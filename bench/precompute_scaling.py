"""Scaling of ``python -m mtlx_core.precompute`` across executors: the same store built sequentially and with Ray.

    python bench/precompute_scaling.py [--preset smoke] [--device cpu] [--modes sequential,seq1,ray1,ray2]
                                       [--explain-shares 1 0.5 0.25] [--keep DIR]

Every run builds the preset's store from an empty store with its own empty ``--models-dir`` (training and pruning
included, so every run does the whole work); they share only the data: the preset's synthetic rooms are rendered
once under ``data_cache/`` relative to the current folder before any timing (``mtlx_core.train.config.synth_cache``)
and passed to every run as an absolute ``--data DATASET=PATH``, so Ray workers find them whatever their folder. Each
run is a subprocess ``python -m mtlx_core.precompute --preset P --store S --models-dir M --no-progress ...`` timed
with ``time.perf_counter``; its output goes to ``run.log`` next to its store. Modes (``--modes``, comma-separated):

- ``sequential``: ``--threads 2`` with the default executor, ``local`` (today's in-process run);
- ``seq1``: the same with ``--threads 1``: the reference store of the one-thread runs (ray2, proc2): a store is
  bit-identical to another built with the same torch threads per unit (float sums depend on the thread count);
- ``ray1``: ``--executor ray --workers 1 --threads 2`` (Ray's cost on the same work, one unit at a time);
- ``ray2``: ``--executor ray --workers 2 --threads 1`` (two units at once on the same two cores);
- ``proc2``: ``--executor processes --workers 2 --threads 1`` (the same without Ray: a process pool);
- ``shares`` (``--device cuda`` only): one Ray run per ``--explain-shares`` value S with
  ``--gpus <--gpus> explain=S`` and ``--workers --share-workers``, S = 0.25 packing four explain units on a GPU.

With ``--device cuda`` every run gets ``--device cuda``, the Ray runs ``--gpus`` (default: one GPU per unit of
every GPU kind; explain=S in the ``shares`` runs), and ``nvidia-smi`` is sampled every 0.5 s during each run
(utilisation mean / max over the samples, each sample the mean over the GPUs; memory the largest sum over GPUs).

Units are counted in each finished store (``SELECT count(*) FROM units``) and each store's content fingerprint
(``mtlx_core.store.fingerprint``: every table's rows without timings, latencies or paths) is compared with the
sequential run's of the same torch threads per unit (``n/a`` when the modes have none). One line per run, then
the last line::

    speedup_2v1=X overhead_vs_sequential=Y per_unit_overhead_ms=Z identical=True|False

X = t(ray1) / t(ray2), Y = t(ray1) / t(sequential), Z = (t(ray1) - startup(ray1) - t(sequential)) / units * 1000
(startup: Ray's start and the warm-up of its workers, logged by the run and printed on its line); the last line
also splits Z: ``dispatch_ms_per_unit`` (time outside start-up and the units' own measured seconds, ray1 minus
sequential, per unit: planning, Ray's submission and return, commits) and ``unit_time_ratio`` (the units' own
seconds, ray1 / sequential: how much Ray's processes slow the computing on the same cores); ``nan`` when
a run it needs was not made or failed; ``identical``: every run finished and its fingerprint equals the reference.
Each run's line also gives ``speedup_vs_sequential`` = t(sequential) / t(run). Goals: identical stores; a per-unit
overhead under 50 ms; on the demo preset, 2 workers at least 1.3x faster than the sequential run with 2 threads
(``speedup_vs_sequential`` >= 1.3 on the ``ray2`` line). Exit status 1 when a run failed,
2 for bad arguments (checked before anything is written). Without ``--keep`` the stores and run folders live in a
temporary folder removed at the end; with it, under DIR (which must not hold earlier runs' folders).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

logger = logging.getLogger("precompute_scaling")

MODES = ("sequential", "seq1", "ray1", "ray2", "proc2", "shares")
SEQUENTIAL = ("sequential", "seq1")
#: Ray modes on the same two cores: workers, torch threads per unit
RAY_RUNS: dict[str, tuple[int, int]] = {"ray1": (1, 2), "ray2": (2, 1)}
#: unit kinds the Ray executor can give GPUs to (images and seed_similarity are CPU-only)
GPU_KINDS = ("train", "prune", "control", "targets", "explain", "layer", "sanity")
SMI_QUERY = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class RunSpec:
    """One precompute run: a label, the executor arguments and the worker count reported."""

    label: str
    mode: str
    workers: int
    args: tuple[str, ...]

    @property
    def threads(self) -> int:
        """Torch threads per unit: stores are bit-identical only between runs with the same count."""
        a = list(self.args)
        return int(a[a.index("--threads") + 1]) if "--threads" in a else 0


@dataclass(frozen=True)
class RunResult:
    spec: RunSpec
    seconds: float
    returncode: int
    units: int | None = None
    fingerprint: str | None = None
    gpu: tuple[float, float, float] | None = None  # utilisation mean, max (%), memory max (MiB)
    startup: float = 0.0  # Ray: seconds to start the instance and warm its workers (the run's log)
    unit_seconds: float = 0.0  # the units' own wall seconds, summed (measured in the process that ran each)

    @property
    def outside_units(self) -> float:
        """Wall seconds outside start-up and the units: imports, data, planning, dispatch, commits."""
        return self.seconds - self.startup - self.unit_seconds


STARTUP = re.compile(r"started with \d+ warm workers in ([0-9.]+) s")


def startup_seconds(log: Path) -> float:
    """The Ray executor's start-up (instance + warm workers) logged by the run, 0 for other executors."""
    found = STARTUP.search(log.read_text()) if log.is_file() else None
    return float(found.group(1)) if found else 0.0


class GpuSampler:
    """Samples ``nvidia-smi`` every ``interval`` s in a thread while the ``with`` block runs."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.util: list[float] = []
        self.mem: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(SMI_QUERY, capture_output=True, text=True, timeout=5, check=True).stdout
            except (OSError, subprocess.SubprocessError) as exc:
                logger.warning("nvidia-smi sampling stopped: %s", exc)
                return
            rows = [[float(v) for v in line.split(",")] for line in out.splitlines() if line.strip()]
            if rows:
                self.util.append(sum(r[0] for r in rows) / len(rows))
                self.mem.append(sum(r[1] for r in rows))
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> tuple[float, float, float] | None:
        if not self.util:
            return None
        return sum(self.util) / len(self.util), max(self.util), max(self.mem)


def parse_shares(values: list[str]) -> dict[str, float]:
    """``KIND=SHARE`` pairs (GPUs per unit of a kind) into a dict; ``ValueError`` naming the bad one."""
    out: dict[str, float] = {}
    for v in values:
        kind, sep, share = v.partition("=")
        if not sep or kind not in GPU_KINDS:
            raise ValueError(f"--gpus takes KIND=SHARE with KIND one of {', '.join(GPU_KINDS)}; got {v!r}")
        try:
            out[kind] = float(share)
        except ValueError:
            raise ValueError(f"--gpus {v!r}: the share must be a number") from None
        if out[kind] < 0:
            raise ValueError(f"--gpus {v!r}: the share must be >= 0")
    return out


def gpu_args(shares: dict[str, float]) -> tuple[str, ...]:
    return ("--gpus", *(f"{k}={v:g}" for k, v in shares.items()))


def plan_runs(modes: list[str], device: str, gpus: dict[str, float], explain_shares: list[float],
              share_workers: int) -> list[RunSpec]:
    """The runs of ``modes`` in order (a mode may repeat: a reproducibility check)."""
    cuda = device.startswith("cuda")
    base = gpu_args(gpus) if cuda else ()
    runs: list[RunSpec] = []
    for i, mode in enumerate(modes):
        if mode in SEQUENTIAL:
            # the default executor (local); left implicit so that this mode also runs on a precompute without Ray
            runs.append(RunSpec(f"{i}-{mode}", mode, 1, ("--threads", "2" if mode == "sequential" else "1")))
        elif mode == "proc2":  # the standard library's process pool: two processes, one thread each
            runs.append(RunSpec(f"{i}-{mode}", mode, 2, ("--executor", "processes", "--workers", "2", "--threads",
                                                         "1")))
        elif mode in RAY_RUNS:
            n, threads = RAY_RUNS[mode]
            runs.append(RunSpec(f"{i}-{mode}", mode, n, ("--executor", "ray", "--workers", str(n), "--threads",
                                                         str(threads), *base)))
        else:
            for s in explain_shares:
                runs.append(RunSpec(f"{i}-explain{s:g}", mode, share_workers, (
                    "--executor", "ray", "--workers", str(share_workers), "--threads", "1",
                    *gpu_args({**gpus, "explain": s}))))
    return runs


def prepare_data(preset_name: str, data: list[str]) -> list[str]:
    """``--data`` arguments for every run: the user's, else the preset's synthetic rooms rendered now (untimed)
    under the current folder and given as absolute paths (one per dataset when unambiguous)."""
    if data:
        return [a for d in data for a in ("--data", d)]
    from mtlx_core.data.synth import generate_synth
    from mtlx_core.precompute.presets import get_study_preset
    from mtlx_core.train.config import resolve_config

    roots: dict[str, set[Path]] = {}
    for arm in get_study_preset(preset_name).arms:
        cfg = resolve_config(arm.train_preset, **arm.train_overrides)  # the arm's own data_root (smoke: its own)
        if cfg.synth is None:
            continue
        root = Path(cfg.data_root).resolve()
        if not root.exists():
            logger.info("rendering the synthetic rooms into %s (once, not timed)", root)
            generate_synth(root, **cfg.synth, progress=False)
        roots.setdefault(cfg.dataset, set()).add(root)
    args: list[str] = []
    for dataset, paths in roots.items():
        if len(paths) == 1:
            args += ["--data", f"{dataset}={next(iter(paths))}"]
        else:
            logger.warning("arms of %s use %d data folders: each run resolves them from %s", dataset, len(paths),
                           Path.cwd())
    return args


def count_units(store: Path) -> tuple[int, float]:
    """Units in the store and the sum of their own wall seconds (measured where each unit ran)."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        row = con.execute("SELECT count(*), coalesce(sum(seconds), 0) FROM units").fetchone()
    finally:
        con.close()
    return (int(row[0]), float(row[1])) if row else (0, 0.0)


def run_one(spec: RunSpec, root: Path, common: list[str], sample_gpu: bool) -> RunResult:
    folder = root / spec.label
    folder.mkdir(parents=True)
    store = folder / "study.duckdb"
    cmd = [sys.executable, "-m", "mtlx_core.precompute", "--store", str(store), "--models-dir",
           str(folder / "models"), "--no-progress", *common, *spec.args]
    logger.info("%s: %s", spec.label, " ".join(cmd[1:]))
    sampler = GpuSampler() if sample_gpu else None
    with (folder / "run.log").open("w") as log, sampler or contextlib.nullcontext():
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
        seconds = time.perf_counter() - t0
    gpu = sampler.summary() if sampler else None
    if rc != 0:
        tail = (folder / "run.log").read_text(errors="replace").splitlines()[-15:]
        logger.error("%s exited with %d after %.1f s; last lines of %s:\n%s", spec.label, rc, seconds,
                     folder / "run.log", "\n".join(tail))
        return RunResult(spec, seconds, rc, gpu=gpu)
    from mtlx_core.store.fingerprint import store_fingerprint

    units, unit_seconds = count_units(store)
    return RunResult(spec, seconds, rc, units, store_fingerprint(store)["store"], gpu,
                     startup_seconds(folder / "run.log"), unit_seconds)


def reference(results: list[RunResult], run: RunResult) -> RunResult | None:
    """The run ``run`` is compared with: the first sequential run with the same torch threads per unit (float sums
    depend on the thread count), None when there is none."""
    return next((r for r in results if r.spec.mode in SEQUENTIAL and r.spec.threads == run.spec.threads), None)


def result_line(r: RunResult, ref: RunResult | None, seq: RunResult | None) -> str:
    """One run: mode, workers, seconds, units, fingerprint match with the sequential run of its thread count (n/a
    when there is none), and t(sequential) / t(run) when both finished."""
    match: bool | str = "n/a" if ref is None else r.fingerprint is not None and r.fingerprint == ref.fingerprint
    ratio = seq.seconds / r.seconds if seq is not None and r.returncode == 0 else math.nan
    line = (f"mode={r.spec.label} workers={r.spec.workers} seconds={r.seconds:.1f} units={r.units} "
            f"fingerprint={(r.fingerprint or 'none')[:16]} match={match} speedup_vs_sequential={ratio:.3f}"
            + (f" startup={r.startup:.1f}" if r.startup else ""))
    if r.returncode != 0:
        line += f" exit={r.returncode}"
    if r.gpu is not None:
        line += f" gpu_util_mean={r.gpu[0]:.1f} gpu_util_max={r.gpu[1]:.0f} gpu_mem_max_mib={r.gpu[2]:.0f}"
    return line


def first(results: list[RunResult], mode: str) -> RunResult | None:
    """The first finished run of ``mode``."""
    return next((r for r in results if r.spec.mode == mode and r.returncode == 0), None)


def summary_line(results: list[RunResult]) -> str:
    """The last line: ratios of the first finished sequential, ray1 and ray2 runs; ``nan`` where one is missing."""
    seq, r1, r2 = (first(results, m) for m in ("sequential", "ray1", "ray2"))
    nan = math.nan
    speedup = r1.seconds / r2.seconds if r1 and r2 else nan
    overhead = r1.seconds / seq.seconds if r1 and seq else nan
    per_unit = (r1.seconds - r1.startup - seq.seconds) / seq.units * 1000 if r1 and seq and seq.units else nan
    pairs = [(r, reference(results, r)) for r in results]
    compared = [(r, ref) for r, ref in pairs if ref is not None and ref is not r]
    identical: bool | str = "n/a" if not compared else all(
        r.returncode == 0 and r.fingerprint == ref.fingerprint for r, ref in compared) and all(
        r.returncode == 0 for r in results)
    dispatch = ((r1.outside_units - seq.outside_units) / seq.units * 1000 if r1 and seq and seq.units else nan)
    slower = r1.unit_seconds / seq.unit_seconds if r1 and seq and seq.unit_seconds else nan
    return (f"speedup_2v1={speedup:.3f} overhead_vs_sequential={overhead:.3f} per_unit_overhead_ms={per_unit:.1f} "
            f"dispatch_ms_per_unit={dispatch:.1f} unit_time_ratio={slower:.3f} identical={identical}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="smoke", help="precompute preset (default smoke)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--images", type=int, help="validation images per arm (default: the preset's)")
    p.add_argument("--modes", default=None, help=f"comma-separated, from {', '.join(MODES)} (default: "
                   "sequential,seq1,ray1,ray2; with --device cuda also shares)")
    p.add_argument("--explain-shares", nargs="+", type=float, default=[1.0, 0.5, 0.25], metavar="S",
                   help="GPUs per explain unit, one shares run each (default 1 0.5 0.25)")
    p.add_argument("--gpus", nargs="+", default=[f"{k}=1" for k in GPU_KINDS], metavar="KIND=SHARE",
                   help="GPUs per unit kind of the Ray runs on cuda (default: 1 for every GPU kind)")
    p.add_argument("--share-workers", type=int, default=os.cpu_count() or 1,
                   help="--workers of the shares runs (default: the machine's cores)")
    p.add_argument("--data", action="append", default=[], metavar="[DATASET=]PATH",
                   help="passed to every run (default: the preset's synthetic rooms, rendered once)")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep stores, run folders and logs under DIR")
    return p


def check_args(args: argparse.Namespace) -> tuple[list[str], dict[str, float]]:
    """Modes and GPU shares, or ``ValueError``; nothing is written before this passes."""
    cuda = args.device.startswith("cuda")
    modes = [m.strip() for m in (args.modes or ("sequential,seq1,ray1,ray2" + (",shares" if cuda else ""))).split(",")]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"unknown mode(s) {', '.join(bad) or '(none)'}; valid modes: {', '.join(MODES)}")
    if "shares" in modes and not cuda:
        raise ValueError("mode 'shares' packs explain units on GPUs: it needs --device cuda")
    if any(s <= 0 for s in args.explain_shares):
        raise ValueError("--explain-shares must be > 0")
    if args.share_workers < 1:
        raise ValueError("--share-workers must be >= 1")
    if any(m != "sequential" for m in modes) and importlib.util.find_spec("ray") is None:
        raise ValueError('the Ray modes need Ray: pip install "mtlx[ray]" (or --modes sequential)')
    from mtlx_core.precompute.presets import get_study_preset

    get_study_preset(args.preset)
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        raise ValueError(f"--keep {args.keep} is not empty: every run starts from an empty store and run folder")
    return modes, parse_shares(args.gpus)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    try:
        modes, gpus = check_args(args)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    runs = plan_runs(modes, args.device, gpus, args.explain_shares, args.share_workers)
    common = ["--preset", args.preset, "--device", args.device, *prepare_data(args.preset, args.data),
              *(["--images", str(args.images)] if args.images else [])]
    root = args.keep or Path(tempfile.mkdtemp(prefix="precompute_scaling_"))
    results: list[RunResult] = []
    try:
        for spec in runs:
            results.append(run_one(spec, root, common, args.device.startswith("cuda")))
            logger.info("%s done in %.1f s", spec.label, results[-1].seconds)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    seq = first(results, "sequential")
    sys.stdout.write("".join(result_line(r, reference(results, r), seq) + "\n" for r in results)
                     + summary_line(results) + "\n")
    return 0 if all(r.returncode == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
