"""Precompute's executors: run the planner's nodes, in its priority order, as far as the resources allow.

``local`` (default) runs each job in the driver's process, one at a time: the sequential run, unit for unit.
``processes`` runs them in ``--workers`` spawned processes of this machine (the standard library's process pool).
``ray`` runs the same job functions as Ray tasks (``pip install "mtlx[ray]"``; ``ray_backend.py``) on a local Ray
instance started with ``--workers`` CPUs, or on an existing cluster (``--address``). The driver stays the only
writer of the store: it resolves each ready node (store reads), submits its job with the node kind's resources
(``--gpus``, ``--cpus``), keeps in flight only what the cluster can run, and commits each result as it arrives. A
worker that dies is retried by Ray (``--retries``; training and pruning resume from their run folder's
checkpoint); a job that raises is reported with its traceback and its dependents are skipped
(:class:`UnitsFailedError` at the end).
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mtlx_core.precompute.jobs import Env, Job, job_threads, run_job
from mtlx_core.precompute.nodes import Node, Prepared
from mtlx_core.store.writer import UnitRows

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "processes", "ray")
#: node kinds that may use a GPU (images and the seeds' noise floor are CPU work or store reads)
GPU_KINDS = ("train", "prune", "control", "targets", "explain", "layer", "sanity")
KINDS = ("images", *GPU_KINDS)
RAY_HINT = 'the ray executor needs Ray: pip install "mtlx[ray]" (or pip install "ray>=2.9")'


class UnitsFailedError(RuntimeError):
    """Some units raised: their tracebacks were logged, their dependents skipped; a rerun resumes."""

    def __init__(self, failed: dict[str, str], skipped: list[str]) -> None:
        self.failed, self.skipped = failed, skipped
        super().__init__(f"{len(failed)} unit(s) failed ({', '.join(failed)}); {len(skipped)} dependent node(s) "
                         f"skipped; fix the cause and run the same command again to resume")


@dataclass(frozen=True)
class ExecutorSettings:
    """How to run the nodes: ``local`` or ``ray`` (address, workers, per-kind GPU and CPU shares, retries)."""

    executor: str = "local"
    address: str | None = None
    workers: int | None = None
    gpus: dict[str, float] = field(default_factory=dict)
    cpus: dict[str, float] = field(default_factory=dict)
    retries: int = 3

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"unknown executor {self.executor!r}; valid: {', '.join(EXECUTORS)}")
        for what, shares, kinds in (("--gpus", self.gpus, GPU_KINDS), ("--cpus", self.cpus, KINDS)):
            for kind, v in shares.items():
                if kind not in kinds:
                    raise ValueError(f"{what}: unknown unit kind {kind!r}; valid: {', '.join(kinds)}")
                if v < 0 or (what == "--gpus" and v > 1 and v != int(v)):
                    raise ValueError(f"{what} {kind}={v:g}: a share must be >= 0 (fractions of one GPU, or whole "
                                     "GPUs)")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.retries < 0:
            raise ValueError(f"--retries must be >= 0, got {self.retries}")
        if self.executor == "local" and (self.address or self.workers or self.gpus or self.cpus):
            raise ValueError("--address, --workers, --gpus KIND=SHARE and --cpus apply to --executor ray "
                             "(--workers also to --executor processes)")
        if self.executor == "processes" and (self.address or self.gpus or self.cpus):
            raise ValueError("--address, --gpus KIND=SHARE and --cpus apply to --executor ray; --executor processes "
                             "takes --workers")


def parse_shares(values: list[str], what: str) -> dict[str, float]:
    """``KIND=SHARE`` tokens (``train=1 explain=0.25``)."""
    out: dict[str, float] = {}
    for v in values:
        kind, sep, share = v.partition("=")
        try:
            out[kind] = float(share)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"{what}: expected KIND=SHARE (e.g. explain=0.25), got {v!r}")
    return out


class Backend(ABC):
    """Runs jobs; ``poll`` returns finished ``(node key, rows or None, error text or None)``."""

    @abstractmethod
    def fits(self, kind: str) -> bool:
        """Whether a unit of ``kind`` can start now."""

    def fits_job(self, kind: str, job: Job) -> bool:
        """Whether the resolved ``job`` can start now (``fits`` by default: room depends on the kind only)."""
        return self.fits(kind)

    @abstractmethod
    def submit(self, node: Node, job: Job) -> None:
        """Start ``job`` (the resolved ``node``)."""

    @abstractmethod
    def poll(self) -> list[tuple[str, list[UnitRows] | None, str | None]]:
        """Wait for at least one running job (or a short while) and return the finished ones."""

    @abstractmethod
    def close(self) -> None:
        """Release the backend's resources."""


class LocalBackend(Backend):
    """In-process, one job at a time; a job's exception propagates (the sequential run's behaviour)."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.done: list[tuple[str, list[UnitRows] | None, str | None]] = []

    def fits(self, kind: str) -> bool:
        return not self.done

    def submit(self, node: Node, job: Job) -> None:
        self.done.append((node.key, run_job(job, self.env), None))

    def poll(self) -> list[tuple[str, list[UnitRows] | None, str | None]]:
        out, self.done = self.done, []
        return out

    def close(self) -> None:
        """Nothing to release: the jobs ran in this process."""


class ProcessBackend(Backend):
    """``--workers`` processes of this machine (the standard library's process pool, spawned: no Ray needed), one
    job each at a time, ``--threads`` torch threads per process (default 1). A job whose training configuration
    fixes its threads (``TrainConfig.threads``: training, pruning, controls) takes that many workers' room, so the
    machine is never oversubscribed. A job's exception is reported like Ray's; a worker that dies breaks the pool:
    its units are reported as failed and a rerun resumes them."""

    def __init__(self, env: Env, workers: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.env = env if env.threads else Env(**{**env.__dict__, "threads": 1})
        self.workers = workers
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        self.running: dict[Any, str] = {}  # future -> node key
        self.slots: dict[Any, int] = {}  # future -> workers' room it takes
        logger.info("process pool: %d workers, %d torch thread(s) each", workers, self.env.threads)

    def room(self, job: Job) -> int:
        """Workers' room ``job`` takes: its training configuration's threads (at most every worker), else 1."""
        threads = job_threads(job)
        return min(self.workers, threads) if threads else 1

    def fits(self, kind: str) -> bool:
        return sum(self.slots.values()) < self.workers

    def fits_job(self, kind: str, job: Job) -> bool:
        return sum(self.slots.values()) + self.room(job) <= self.workers

    def submit(self, node: Node, job: Job) -> None:
        fut = self.pool.submit(run_job, job, self.env)
        self.running[fut] = node.key
        self.slots[fut] = self.room(job)

    def poll(self) -> list[tuple[str, list[UnitRows] | None, str | None]]:
        import traceback
        from concurrent.futures import FIRST_COMPLETED, wait

        if not self.running:
            return []
        done, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
        out: list[tuple[str, list[UnitRows] | None, str | None]] = []
        for fut in done:
            key = self.running.pop(fut)
            self.slots.pop(fut, None)
            try:
                out.append((key, fut.result(), None))
            except Exception as exc:  # the job raised (its traceback), or the pool broke
                out.append((key, None, "".join(traceback.format_exception(exc))))
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def make_backend(settings: ExecutorSettings, env: Env) -> Backend:
    if settings.executor == "local":
        return LocalBackend(env)
    if settings.executor == "processes":
        return ProcessBackend(env, settings.workers or os.cpu_count() or 1)
    from mtlx_core.precompute.ray_backend import RayBackend  # Ray is imported only when chosen

    return RayBackend(env, settings)


def execute(order: list[Node], resolve: Callable[[Node], Prepared | None], backend: Backend,
            commit: Callable[[UnitRows], None], finished: Callable[[Node], None], raise_first: bool) -> None:
    """Run ``order``'s nodes: each ready node (deps finished) is resolved and submitted in priority order while
    the backend has room and no running node holds one of its claims; ``finished(node)`` after each node (run or
    found in the journal). A failed node's dependents are skipped; ``UnitsFailedError`` at the end."""
    pending = list(order)
    by_key = {n.key: n for n in order}
    state: dict[str, str] = {}  # node key -> done | failed | skipped
    running: dict[str, Prepared] = {}
    failed: dict[str, str] = {}
    skipped: list[str] = []
    prepared: dict[str, Prepared] = {}
    while pending or running:
        progressed = False
        held = set().union(*(p.claims for p in running.values())) if running else set()
        still: list[Node] = []
        for node in pending:
            deps = [state.get(d) for d in node.deps]
            if any(d in ("failed", "skipped") for d in deps):
                state[node.key] = "skipped"
                skipped.append(node.key)
                finished(node)
                progressed = True
                continue
            if any(d != "done" for d in deps) or not backend.fits(node.kind):
                still.append(node)
                continue
            if node.key not in prepared:
                prep = resolve(node)
                if prep is None:
                    state[node.key] = "done"
                    finished(node)
                    progressed = True
                    continue
                prepared[node.key] = prep
            prep = prepared[node.key]
            if prep.claims & held:
                still.append(node)
                continue
            if prep.job is not None and not backend.fits_job(node.kind, prep.job):
                # it needs more room than is free: later nodes wait too, or they would starve it
                still += pending[pending.index(node):]
                break
            if prep.local is not None:  # a driver-side unit: store reads only
                for unit in prep.local():
                    commit(unit)
                state[node.key] = "done"
                finished(node)
                progressed = True
                continue
            assert prep.job is not None
            running[node.key] = prep
            held |= prep.claims
            backend.submit(node, prep.job)
            progressed = True
        pending = still
        for key, rows, error in backend.poll():
            node_prep = running.pop(key)
            del prepared[key]
            node = by_key[key]
            if error is not None:
                if raise_first:
                    raise RuntimeError(error)
                logger.error("unit %s failed:\n%s", ", ".join(node_prep.uids), error)
                state[key] = failed[key] = "failed"
                failed[key] = error
            else:
                for unit in rows or []:
                    commit(unit)
                state[key] = "done"
            finished(node)
            progressed = True
        if not progressed and not running and pending:
            raise RuntimeError(f"no node can start: {pending[0].key} waits for {pending[0].deps}")
    if failed:
        raise UnitsFailedError(failed, skipped)
