"""The unit DAG of a precompute preset on N GPUs: a list-scheduling simulation, the critical path, a plan report.

Public API::

    PlanNode(key, kind, arm_id, deps, priority, info)   # one work unit of the plan (the planner builds them)
    s = simulate(nodes, costs, gpus=2, shares=PACKING_SHARES)   # Schedule: wall, start/end, gpu, utilisation
    seconds, keys = critical_path(nodes, costs)          # longest chain by cost (unlimited GPUs)
    contention_from(t_alone, t_packed, n)                # the contention of a packing benchmark

The model (``simulate``): every node of kind ``k`` occupies ``shares.get(k, 1.0)`` of one GPU while it runs (a
unit never spans GPUs; fractional units pack onto one GPU as long as their shares sum to at most 1). Share 0 marks
a CPU kind (images, seed similarity): it takes one slot of a pool of ``cpus`` (None: unlimited) and no GPU. At time
0 and whenever a node finishes, the ready nodes (every dependency finished) are scanned in priority order and each
one that fits is started on the fullest GPU it fits on (best fit: whole GPUs stay free for share-1 units); with
``backfill=False`` no GPU node after the first one that does not fit starts in that scan (no later node overtakes
it on the GPUs; CPU nodes still start). ``vs serial`` in the report = total compute / wall.

Packing slowdown: a unit sharing a GPU does not run as fast as alone. A GPU that runs ``n`` units runs each of
them at speed ``1 / (1 + contention * (n - 1))``, re-evaluated whenever a unit starts or ends on it (work left
= cost - work done). ``contention = 0`` is perfect packing: the share is the fraction of the GPU a unit keeps busy
alone (small demo-size models, Python and CPU-side work between kernels); ``contention = 1``: each unit saturates
the GPU alone and packing gains nothing (n packed units take n times as long). The default, 0.1, is an assumption
(context switches and cache interference of time-sliced processes), not a measurement: calibrate it with
``contention_from`` on the GPU benchmark (one unit alone vs n packed). Costs are the seconds a node takes alone.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: the kinds of node a plan holds
KINDS: tuple[str, ...] = ("images", "train", "prune", "control", "targets", "explain", "layer", "sanity",
                          "seed_similarity")
#: shares of one GPU when packing (``format_plan``'s default): CPU kinds 0, the explain family a quarter
PACKING_SHARES: dict[str, float] = {"images": 0.0, "seed_similarity": 0.0, "explain": 0.25, "layer": 0.25,
                                    "sanity": 0.25, "targets": 0.25, "train": 1.0, "prune": 1.0, "control": 1.0}
#: shares without packing: every GPU kind takes a whole GPU (CPU kinds stay on the CPU)
NO_PACKING_SHARES: dict[str, float] = {k: (0.0 if v == 0.0 else 1.0) for k, v in PACKING_SHARES.items()}
DEFAULT_CONTENTION = 0.1
_EPS = 1e-9


@dataclass(frozen=True)
class PlanNode:
    """One work unit of a precompute plan: ``deps`` must finish first; lower ``priority`` runs first (the position
    in the sequential order: dependencies always have lower priority); ``info``: facts for the cost estimate
    (``mtlx_core.precompute.costs``)."""

    key: str
    kind: str
    arm_id: str
    deps: tuple[str, ...]
    priority: int
    info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Schedule:
    """A simulated run: ``wall`` seconds; per node ``start``/``end`` and its ``gpu`` (None: on the CPU pool);
    ``busy_gpu_seconds`` = sum of share x (end - start) over GPU nodes; ``utilisation`` = busy / (gpus x wall)."""

    gpus: int
    wall: float
    start: dict[str, float]
    end: dict[str, float]
    gpu: dict[str, int | None]
    busy_gpu_seconds: float
    utilisation: float


def _validate(nodes: Sequence[PlanNode], costs: Mapping[str, float]) -> dict[str, PlanNode]:
    """Nodes by key; ValueError for a duplicate key, an unknown dependency, a missing or bad cost, or a cycle."""
    by_key: dict[str, PlanNode] = {}
    for n in nodes:
        if n.key in by_key:
            raise ValueError(f"duplicate plan node key {n.key!r}")
        by_key[n.key] = n
    for n in nodes:
        unknown = [d for d in n.deps if d not in by_key]
        if unknown:
            raise ValueError(f"plan node {n.key!r} depends on unknown node(s) {', '.join(map(repr, unknown))}")
        c = costs.get(n.key)
        if c is None:
            raise ValueError(f"no cost for plan node {n.key!r}")
        if not math.isfinite(c) or c < 0:
            raise ValueError(f"cost of plan node {n.key!r} must be finite and >= 0 seconds, got {c}")
    _topological(by_key)
    return by_key


def _topological(by_key: Mapping[str, PlanNode]) -> list[str]:
    """Keys in dependency order (Kahn); ValueError naming the nodes of a cycle."""
    indeg = {k: len(set(n.deps)) for k, n in by_key.items()}
    users: dict[str, list[str]] = {k: [] for k in by_key}
    for k, n in by_key.items():
        for d in set(n.deps):
            users[d].append(k)
    todo = [k for k, v in indeg.items() if v == 0]
    order: list[str] = []
    while todo:
        k = todo.pop()
        order.append(k)
        for u in users[k]:
            indeg[u] -= 1
            if indeg[u] == 0:
                todo.append(u)
    if len(order) < len(by_key):
        stuck = sorted(k for k, v in indeg.items() if v > 0)
        shown = ", ".join(stuck[:5]) + (f" and {len(stuck) - 5} more" if len(stuck) > 5 else "")
        raise ValueError(f"the plan has a dependency cycle among {shown}")
    return order


def _share(kind: str, shares: Mapping[str, float]) -> float:
    s = float(shares.get(kind, 1.0))
    if s == 0.0:
        return 0.0
    if not 0.0 < s <= 1.0:  # also NaN
        raise ValueError(f"GPU share of kind {kind!r} must be in (0, 1] (or 0 for a CPU kind), got {s}")
    return s


def simulate(nodes: Sequence[PlanNode], costs: Mapping[str, float], gpus: int,
             shares: Mapping[str, float] | None = None, *, cpus: int | None = None,
             contention: float = DEFAULT_CONTENTION, backfill: bool = True) -> Schedule:
    """List-schedule ``nodes`` (costs in seconds alone) on ``gpus`` GPUs (module docstring: the model)."""
    shares = NO_PACKING_SHARES if shares is None else shares
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, got {gpus}")
    if cpus is not None and cpus < 1:
        raise ValueError(f"cpus must be at least 1 (or None: unlimited), got {cpus}")
    if not 0.0 <= contention <= 1.0:
        raise ValueError(f"contention must be in [0, 1], got {contention}")
    by_key = _validate(nodes, costs)
    share = {k: _share(n.kind, shares) for k, n in by_key.items()}
    waiting = {k: len(set(n.deps)) for k, n in by_key.items()}
    users: dict[str, list[str]] = {k: [] for k in by_key}
    for k, n in by_key.items():
        for d in set(n.deps):
            users[d].append(k)
    ready: dict[float, list[tuple[int, str]]] = {}  # share -> heap of (priority, key); share 0: the CPU pool
    for k, n in by_key.items():
        if waiting[k] == 0:
            ready.setdefault(share[k], []).append((n.priority, k))
    for heap in ready.values():
        heapq.heapify(heap)
    free = [1.0] * gpus
    on_gpu: list[set[str]] = [set() for _ in range(gpus)]
    cpu_busy = 0
    left: dict[str, float] = {}  # running node -> work left (seconds alone)
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    where: dict[str, int | None] = {}
    now = 0.0

    def launch() -> None:
        """Start ready nodes in priority order while they fit (one heap per share: a share that does not fit
        the roomiest GPU skips its whole heap, as a scan of every ready node would, since room only shrinks)."""
        nonlocal cpu_busy
        cpu = ready.get(0.0)
        while cpu and (cpus is None or cpu_busy < cpus):
            _, k = heapq.heappop(cpu)
            cpu_busy += 1
            where[k], start[k], left[k] = None, now, float(costs[k])
        while True:
            tops = [(h[0], s) for s, h in ready.items() if s > 0 and h]
            roomy = max(free)
            if not backfill:  # only the first GPU node in priority order may start
                tops = [min(tops)] if tops else []
            fitting = [t for t in tops if t[1] <= roomy + _EPS]
            if not fitting:
                return
            (_, k), s = min(fitting)
            heapq.heappop(ready[s])
            g = min((i for i in range(gpus) if free[i] >= s - _EPS), key=lambda i: (free[i], i))  # best fit
            free[g] -= s
            on_gpu[g].add(k)
            where[k], start[k], left[k] = g, now, float(costs[k])

    def speed(k: str) -> float:
        g = where[k]
        return 1.0 if g is None else 1.0 / (1.0 + contention * (len(on_gpu[g]) - 1))

    while len(end) < len(by_key):
        launch()
        if not left:  # cannot happen after validation: every share fits an empty GPU
            raise RuntimeError("the simulation stalled with nodes left and none running")
        rates = {k: speed(k) for k in left}
        dt = min(left[k] / rates[k] for k in left)
        now += dt
        done = []
        for k in list(left):
            left[k] -= dt * rates[k]
            if left[k] <= _EPS * max(1.0, float(costs[k])):
                done.append(k)
        for k in sorted(done, key=lambda x: by_key[x].priority):
            del left[k]
            end[k] = now
            g = where[k]
            if g is None:
                cpu_busy -= 1
            else:
                free[g] = min(1.0, free[g] + share[k])
                on_gpu[g].discard(k)
            for u in users[k]:
                waiting[u] -= 1
                if waiting[u] == 0:
                    heapq.heappush(ready.setdefault(share[u], []), (by_key[u].priority, u))
    wall = max(end.values(), default=0.0)
    busy = sum(share[k] * (end[k] - start[k]) for k in by_key if where[k] is not None)
    return Schedule(gpus=gpus, wall=wall, start=start, end=end, gpu=where, busy_gpu_seconds=busy,
                    utilisation=busy / (gpus * wall) if wall > 0 else 0.0)


def critical_path(nodes: Sequence[PlanNode], costs: Mapping[str, float]) -> tuple[float, list[str]]:
    """The longest dependency chain by cost (the wall time with unlimited GPUs and no packing slowdown):
    ``(seconds, keys from first to last)``; ties go to the lower-priority predecessor."""
    by_key = _validate(nodes, costs)
    best: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for k in _topological(by_key):
        deps = sorted(set(by_key[k].deps), key=lambda d: (-best[d], by_key[d].priority))
        via[k] = deps[0] if deps else None
        best[k] = float(costs[k]) + (best[deps[0]] if deps else 0.0)
    if not best:
        return 0.0, []
    last = min(best, key=lambda k: (-best[k], by_key[k].priority))
    chain: list[str] = []
    cur: str | None = last
    while cur is not None:
        chain.append(cur)
        cur = via[cur]
    return best[last], chain[::-1]


def contention_from(t_alone: float, t_packed: float, n: int) -> float:
    """The ``contention`` of a benchmark in which one unit took ``t_alone`` seconds alone and ``t_packed`` seconds
    while ``n`` equal units shared the GPU (clipped to [0, 1])."""
    if n < 2 or t_alone <= 0:
        raise ValueError(f"need n >= 2 packed units and t_alone > 0, got n={n}, t_alone={t_alone}")
    return min(1.0, max(0.0, (t_packed / t_alone - 1.0) / (n - 1)))


def _hms(seconds: float) -> str:
    """``1 h 02 min``, ``3 min 05 s`` or ``4.2 s``."""
    s = round(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _chain(keys: Sequence[str], head: int = 3, tail: int = 2) -> str:
    if len(keys) <= head + tail + 1:
        return " -> ".join(keys)
    return " -> ".join([*keys[:head], f"... ({len(keys) - head - tail} more)", *keys[-tail:]])


def format_plan(nodes: Sequence[PlanNode], costs: Mapping[str, float], gpus_list: Sequence[int] = (1,),
                shares: Mapping[str, float] | None = None, *, contention: float = DEFAULT_CONTENTION,
                cpus: int | None = None, sources: Mapping[str, str] | None = None) -> str:
    """The plan report: units and compute per kind, the critical path, and the predicted wall time and GPU
    utilisation on each GPU count without packing (every GPU kind a whole GPU) and with packing (``shares``,
    default ``PACKING_SHARES``). ``sources``: optional key -> where its cost came from (counted per kind)."""
    shares = PACKING_SHARES if shares is None else shares
    unpacked = {k: (0.0 if v == 0.0 else 1.0) for k, v in shares.items()}
    path_s, path = critical_path(nodes, costs)  # validates
    kinds = sorted({n.kind for n in nodes}, key=lambda k: (KINDS.index(k) if k in KINDS else len(KINDS), k))
    lines = [f"plan: {len(nodes)} units", f"  {'kind':<16}{'units':>7}{'compute':>16}{'mean':>12}{'share':>7}"
             + ("  cost from" if sources else "")]
    total = 0.0
    for kind in kinds:
        keys = [n.key for n in nodes if n.kind == kind]
        sec = sum(float(costs[k]) for k in keys)
        total += sec
        src = ""
        if sources:
            counts: dict[str, int] = {}
            for k in keys:
                counts[sources.get(k, "?")] = counts.get(sources.get(k, "?"), 0) + 1
            src = "  " + ", ".join(f"{v} {s}" for s, v in sorted(counts.items()))
        share = _share(kind, shares)
        lines.append(f"  {kind:<16}{len(keys):>7}{_hms(sec):>16}{_hms(sec / len(keys)):>12}"
                     f"{('cpu' if share == 0 else f'{share:g}'):>7}{src}")
    lines.append(f"total compute: {_hms(total)} ({total:.0f} s, each unit alone)")
    lines.append(f"critical path: {_hms(path_s)} over {len(path)} units: {_chain(path)}")
    lines.append(f"  {'GPUs':>5}  {'packing':<8}{'wall':>14}{'GPU util':>10}{'vs serial':>11}")
    for packing, sh in (("no", unpacked), ("yes", shares)):
        for n in gpus_list:
            s = simulate(nodes, costs, n, sh, cpus=cpus, contention=contention)
            ratio = f"{total / s.wall:.2f}x" if s.wall > 0 else "-"
            lines.append(f"  {n:>5}  {packing:<8}{_hms(s.wall):>14}{s.utilisation:>10.0%}{ratio:>11}")
    packed = ", ".join(f"{k} {v:g}" for k, v in shares.items() if 0 < v < 1)
    lines.append(f"packing: shares {packed or 'none'}; contention {contention:g} (a GPU running n units runs each at "
                 f"1/(1 + {contention:g}(n-1)) of its speed alone: an assumption until the GPU benchmark measures "
                 "it); without packing one unit per GPU")
    return "\n".join(lines)
