"""The ``ray`` executor's backend: precompute's job functions as Ray tasks (``pip install "mtlx[ray]"``).

On a local Ray instance started with ``--workers`` CPUs, or an existing cluster (``--address``, or ``RAY_ADDRESS``
under Ray Jobs). Each unit claims its kind's ``--cpus`` / ``--gpus`` (at least the threads its training
configuration fixes); the backend keeps in flight only what the cluster has free, re-reading its resources every
``REFRESH_S`` seconds so that nodes that join later get units too. A worker that dies is retried by Ray
(``--retries``); a job that raises comes back as its error text. Imported only when ``--executor ray`` is chosen.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from mtlx_core.precompute.executors import GPU_KINDS, RAY_HINT, Backend, ExecutorSettings
from mtlx_core.precompute.jobs import Env, Job, job_threads, run_job
from mtlx_core.precompute.nodes import Node
from mtlx_core.store.writer import UnitRows

logger = logging.getLogger(__name__)

REFRESH_S = 10.0  # seconds between two reads of the cluster's resources


def _warm() -> int:
    """Import what every job needs (in a Ray worker, before its first unit)."""
    import mtlx_core.precompute.jobs  # noqa: F401

    return os.getpid()


def _ray_job(job: Job, env: Env) -> list[UnitRows]:
    return run_job(job, env)


class RayBackend(Backend):
    def __init__(self, env: Env, settings: ExecutorSettings) -> None:
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError(RAY_HINT) from exc
        t0 = time.monotonic()
        self.ray, self.env, self.s = ray, env, settings
        self.started = False
        if not ray.is_initialized():
            package_root = str(Path(__file__).resolve().parents[2])
            env_vars = {"PYTHONPATH": os.pathsep.join([package_root, *sys.path[1:2], os.environ.get("PYTHONPATH", "")])}
            if os.environ.get("MTLX_PLUGINS"):
                env_vars["MTLX_PLUGINS"] = os.environ["MTLX_PLUGINS"]
            kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env_vars}, "log_to_driver": True}
            if settings.address or os.environ.get("RAY_ADDRESS"):  # an existing cluster (RAY_ADDRESS: Ray Jobs)
                ray.init(address=settings.address, **kwargs)
            else:
                ray.init(num_cpus=settings.workers or os.cpu_count() or 1, include_dashboard=False, **kwargs)
            self.started = True
        self.used = {"CPU": 0.0, "GPU": 0.0}
        self.total: dict[str, float] = {}
        self.checked = 0.0
        self._refresh()
        # one warm-up task per CPU: workers import torch and mtlx before the first unit (a start-up cost, not a
        # per-unit one)
        warm = ray.remote(_warm)
        n = max(1, min(64, int(self.total["CPU"])))
        ray.get([warm.options(num_cpus=1).remote() for _ in range(n)])
        logger.info("ray cluster: %g CPUs, %g GPUs; started with %d warm workers in %.1f s", self.total["CPU"],
                    self.total["GPU"], n, time.monotonic() - t0)
        self.remote = ray.remote(_ray_job)
        self.running: dict[Any, tuple[str, float, float]] = {}  # ref -> node key, cpus, gpus

    def _refresh(self) -> None:
        """The cluster's resources, re-read every ``REFRESH_S`` (nodes that join later get units too)."""
        if self.total and time.monotonic() - self.checked < REFRESH_S:
            return
        res = self.ray.cluster_resources()
        total = {"CPU": float(res.get("CPU", 0)), "GPU": float(res.get("GPU", 0))}
        if self.total and total != self.total:
            logger.info("ray cluster now: %g CPUs, %g GPUs", total["CPU"], total["GPU"])
        self.total, self.checked = total, time.monotonic()

    @property
    def free(self) -> dict[str, float]:
        return {k: self.total[k] - self.used[k] for k in self.total}

    def need(self, kind: str, job: Job | None = None) -> tuple[float, float]:
        """CPUs and GPUs a unit claims: ``--cpus``/``--gpus`` of its kind; at least the threads its training
        configuration fixes (``TrainConfig.threads``), at most the cluster's CPUs."""
        gpus = self.s.gpus.get(kind, 1.0 if self.total["GPU"] and kind in GPU_KINDS else 0.0)
        cpus = self.s.cpus.get(kind, 1.0)
        threads = job_threads(job) if job is not None else None
        if threads:
            cpus = max(cpus, min(float(threads), self.total["CPU"] or float(threads)))
        return cpus, gpus

    def fits(self, kind: str) -> bool:
        return self._fits(kind, None)

    def fits_job(self, kind: str, job: Job) -> bool:
        return self._fits(kind, job)

    def _fits(self, kind: str, job: Job | None) -> bool:
        self._refresh()
        cpus, gpus = self.need(kind, job)
        if cpus > self.total["CPU"] or gpus > self.total["GPU"]:
            raise ValueError(f"a {kind} unit needs {cpus:g} CPUs and {gpus:g} GPUs; the cluster has "
                             f"{self.total['CPU']:g} CPUs and {self.total['GPU']:g} GPUs (--cpus / --gpus)")
        return cpus <= self.free["CPU"] + 1e-9 and gpus <= self.free["GPU"] + 1e-9

    def submit(self, node: Node, job: Job) -> None:
        cpus, gpus = self.need(node.kind, job)
        env = self.env if self.env.threads else Env(**{**self.env.__dict__, "threads": max(1, int(cpus))})
        ref = self.remote.options(num_cpus=cpus, num_gpus=gpus, max_retries=self.s.retries,
                                  retry_exceptions=False, name=f"mtlx:{node.kind}").remote(job, env)
        self.running[ref] = (node.key, cpus, gpus)
        self.used["CPU"] += cpus
        self.used["GPU"] += gpus

    def poll(self) -> list[tuple[str, list[UnitRows] | None, str | None]]:
        if not self.running:
            return []
        ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=REFRESH_S)
        if not ready:  # nothing finished: let the caller look again (more nodes may have joined)
            return []
        ready += self.ray.wait([r for r in self.running if r not in ready], num_returns=len(self.running) - 1,
                               timeout=0)[0] if len(self.running) > 1 else []
        out: list[tuple[str, list[UnitRows] | None, str | None]] = []
        for ref in ready:
            key, cpus, gpus = self.running.pop(ref)
            self.used["CPU"] -= cpus
            self.used["GPU"] -= gpus
            try:
                out.append((key, self.ray.get(ref), None))
            except self.ray.exceptions.RayError as exc:  # the job raised, or its worker died past the retries
                out.append((key, None, str(exc)))
        return out

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
