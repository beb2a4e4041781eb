"""The perturbation-curve engine: forwards every distinct perturbed image of one image once, and scores it for
every (curve, target) that uses it.

Every metric of the family describes its curves as ``CurvePlan`` objects (``plan.py``); the engine does the
rest, the same way for all of them:

- **No score depends on the other images.** All curves of an image (every metric, ordering, target and task)
  are planned and deduplicated together. A chunk mixes images only through a graph that the build verified
  row-wise bit-identical to one-image forwards (``FastForward.bitwise``: SegNet-MTAN with batch-1 conv
  backends); through any other graph (DeepLab's dilated convolutions) each image is forwarded in chunks of its
  own, whose make-up is a function of the image alone. Either way every score of an image is bit-identical
  whether the image was scored alone or among others (decision D18; ``tests/test_faithfulness_engine.py``
  checks it on near-tied predictions for both architectures).
- **Each distinct perturbed image once.** Curves with the same root and order prefix share images
  (``PrefixIndex``): the random orderings of an image (the same for every target and task: common random
  numbers) are forwarded once for all targets.
- **The cheapest graph that serves every user.** An image used by one task only runs that task's trimmed graph
  (``FastForward(model)(task, x)``); one used by several tasks runs the graph of all task outputs once
  (``ALL_TASKS``, from the same trace). This replaces the former ``precompute/shared_random.py``.
- **Deletion at step 0 is the clean image**: scored from the clean forward, never forwarded again.

Public API::

    engine = Engine(model, tasks, EngineSettings())
    clean = engine.clean(image)                              # {task: (C, H, W)} batch-1 forward
    values = engine.run({i: image}, {i: clean}, plans, users, targets)  # {(plan, user): values at plan.steps}
    perturbed_image(image, plan, k)                          # one perturbed image (what the app shows)
    engine.stats                                             # rows forwarded, chunks, chunk capacity
    engine.budget()                                          # the chunk budget (``memory.Budget``), measured once

Chunks: ``chunk_size`` rows per forward if given, else as many as ``memory_budget_mb`` holds (None: from the
device, times ``gpu_share`` on a GPU; ``mtlx_core.faithfulness.memory``), at most ``MAX_CHUNK``; the chunk of
each graph and image size is logged once per engine.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mtlx_core.explain.fastforward import ALL_TASKS, FastForward, ForwardSettings
from mtlx_core.faithfulness.memory import Budget, check_gpu_share, chunk_cap, memory_budget
from mtlx_core.faithfulness.plan import CurvePlan, PrefixIndex, fill_image, road_image
from mtlx_core.tasks.base import DEFAULT_SCORE_OPTIONS, ExplanationTarget, ScoreOptions, Task

logger = logging.getLogger(__name__)
#: largest chunk: on CPU, batches of 16-32 small images run faster per image than 64 (cache)
MAX_CHUNK = 32


@dataclass(frozen=True)
class EngineSettings:
    """Knobs that only change speed (``forward`` and ``score`` are recorded with every number)."""

    chunk_size: int | None = None  # perturbed images per forward; None: sized to memory_budget_mb
    memory_budget_mb: int | None = None  # MiB for a chunk's activations; None: from the device (``memory``)
    forward: ForwardSettings = field(default_factory=ForwardSettings)
    score: ScoreOptions = DEFAULT_SCORE_OPTIONS
    gpu_share: float = 1.0  # the fraction of the GPU this process may use, in (0, 1] (budget None on CUDA)

    def __post_init__(self) -> None:
        check_gpu_share(self.gpu_share)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class EngineStats:
    """What the engine forwarded: ``rows / (chunks x capacity)`` is the forward efficiency."""

    rows: int = 0
    chunks: int = 0
    capacity: int = 0  # sum over chunks of the chunk size allowed

    @property
    def efficiency(self) -> float:
        return self.rows / self.capacity if self.capacity else float("nan")


class Engine:
    """A model's perturbation forwards; build once per model, call per image."""

    def __init__(self, model: nn.Module, tasks: Mapping[str, Task], settings: EngineSettings | None = None,
                 forward: FastForward | None = None) -> None:
        self.model = model
        self.tasks = dict(tasks)
        self.settings = settings or EngineSettings()
        self.fwd = forward or FastForward(model, self.settings.forward)
        self.slices: dict[str, slice] = {}
        self.stats = EngineStats()
        self._caps: dict[tuple[str, tuple[int, ...]], int] = {}
        self._budget: Budget | None = None

    @property
    def device(self) -> torch.device:
        return next(iter(self.model.parameters()), torch.empty(0)).device

    def _set_slices(self, x: torch.Tensor) -> None:
        """Channel range of each task in ``ALL_TASKS`` outputs (the model's output order)."""
        with torch.inference_mode():
            out = self.model.eval()(x)
        start = 0
        for name, y in out.items():
            self.slices[name] = slice(start, start + y.shape[1])
            start += y.shape[1]
        missing = sorted(set(self.tasks) - set(self.slices))
        if missing:
            raise ValueError(f"the model has no output for task(s) {missing}; its outputs: {', '.join(out)}")

    def budget(self) -> Budget:
        """The chunks' memory budget, measured once per engine on the model's device (``memory_budget``)."""
        if self._budget is None:
            self._budget = memory_budget(self.device, self.settings.memory_budget_mb, self.settings.gpu_share)
        return self._budget

    def cap(self, graph: str, x: torch.Tensor) -> int:
        """Rows per forward of ``graph`` for images shaped like ``x`` ``(1, C, H, W)``."""
        if self.settings.chunk_size is not None:
            return max(1, self.settings.chunk_size)
        key = (graph, tuple(x.shape[1:]))
        if key not in self._caps:
            per = self.fwd.activation_bytes_per_image(graph, x)
            budget = self.budget()
            self._caps[key] = chunk_cap(budget.bytes, per, MAX_CHUNK)
            logger.info("perturbation forwards of %r at %s on %s: chunk %d (%s; %.1f MiB of activations per "
                        "image, at most %d)", graph, "x".join(map(str, key[1])), self.device, self._caps[key],
                        budget.source, per / 2**20, MAX_CHUNK)
        return self._caps[key]

    def clean(self, image: torch.Tensor, task_names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Clean prediction ``(C, H, W)`` per task: a batch-1 forward of the image alone."""
        x = image[None].to(self.device, torch.float32)
        return {t: self.fwd(t, x)[0] for t in (task_names or list(self.tasks))}

    def clean_score(self, task: str, clean: torch.Tensor, target: ExplanationTarget) -> float:
        """The task scalar of the unperturbed image (every curve's denominator)."""
        pred = clean[None]
        ids = torch.tensor([target.target_id], device=pred.device)
        return float(self.tasks[task].perturbation_score(pred, pred, target.mask[None].to(pred.device), ids,
                                                         self.settings.score)[0])

    def run(self, images: Mapping[int, torch.Tensor], clean: Mapping[int, Mapping[str, torch.Tensor]],
            plans: Sequence[CurvePlan], users: Sequence[Sequence[int]], targets: Sequence[ExplanationTarget]
            ) -> dict[tuple[int, int], np.ndarray]:
        """Scalar of every evaluated step of every plan, for each of its users (indices into ``targets``).

        ``images``/``clean``: per image index (``plan.image``), the image ``(C, H, W)`` and its clean predictions.
        Returns ``{(plan, user): values}`` with ``values[j]`` the raw task scalar after ``plan.steps[j]`` steps
        (float64; divide by the clean score for the curve). A chunk mixes images only through a graph whose rows
        the build verified bit-identical to one-image forwards (``FastForward.bitwise``); otherwise every image
        is forwarded in chunks of its own, so no score depends on the other images either way."""
        x0 = {i: img.detach().to(self.device, torch.float32) for i, img in images.items()}
        example = next(iter(x0.values()))[None]
        if not self.slices:
            self._set_slices(example)
        prefixes = PrefixIndex()
        first: dict[int, tuple[int, int]] = {}
        node_users: dict[int, list[tuple[int, int, int]]] = {}  # node -> (plan, step position, user)
        clean_rows: list[tuple[int, int, int]] = []
        for q, p in enumerate(plans):
            nodes = prefixes.ids((p.image, p.root if p.root is not None else ("own", q)), p.order)
            if p.start is not None:
                nodes[0] = prefixes.root(("start", p.image, p.start))
            for j, k in enumerate(p.steps.tolist()):
                for u in users[q]:
                    if k == 0 and p.direction == "deletion":
                        clean_rows.append((q, j, u))
                        continue
                    node_users.setdefault(nodes[k], []).append((q, j, u))
                first.setdefault(nodes[k], (q, k))
        out = {(q, u): np.full(len(p.steps), np.nan) for q, p in enumerate(plans) for u in users[q]}
        for q, j, u in clean_rows:  # deletion's step 0 is the clean image: scored from the clean forward
            c = clean[plans[q].image]
            self._score([(q, j, u)], {t: v[None] for t, v in c.items()}, [0], [c], targets, out)
        groups: dict[str, list[int]] = {}
        for node, us in node_users.items():
            names = {targets[u].task for _, _, u in us}
            groups.setdefault(names.pop() if len(names) == 1 else ALL_TASKS, []).append(node)
        np_images = {i: x.cpu().numpy() for i, x in x0.items()}
        fills: dict[int, dict[object, torch.Tensor | None]] = {i: {} for i in x0}  # per image
        hw = (int(example.shape[-2]), int(example.shape[-1]))
        for graph in sorted(groups):
            cap = self.cap(graph, example)
            mixed = bool(self.fwd.bitwise.get((graph, *hw)))
            by_image: dict[int, list[int]] = {}
            for n in sorted(groups[graph]):
                by_image.setdefault(-1 if mixed else plans[first[n][0]].image, []).append(n)
            for nodes in by_image.values():
                for start in range(0, len(nodes), cap):
                    part = nodes[start:start + cap]
                    rows_k = [first[n] for n in part]
                    x = torch.stack([perturbed_image(x0[plans[q].image], plans[q], k, np_images[plans[q].image],
                                                     fills[plans[q].image]) for q, k in rows_k])
                    y = self.fwd(graph, x)
                    pred = ({t: y[:, s] for t, s in self.slices.items()} if graph == ALL_TASKS else {graph: y})
                    rows = [(q, j, u) for n in part for q, j, u in node_users[n]]
                    src = [i for i, n in enumerate(part) for _ in node_users[n]]
                    self._score(rows, pred, src, [clean[plans[q].image] for q, _, _ in rows], targets, out)
                    self.stats.rows += len(part)
                    self.stats.chunks += 1
                    self.stats.capacity += cap
        return out

    def _score(self, rows: list[tuple[int, int, int]], pred: Mapping[str, torch.Tensor], src: list[int],
               clean: Sequence[Mapping[str, torch.Tensor]], targets: Sequence[ExplanationTarget],
               out: dict[tuple[int, int], np.ndarray]) -> None:
        """Task scalars of ``rows`` (plan, step position, user): prediction ``pred[task][src[i]]`` against the
        clean prediction ``clean[i]`` of the row's image."""
        by_task: dict[str, list[int]] = {}
        for i, (_, _, u) in enumerate(rows):
            by_task.setdefault(targets[u].task, []).append(i)
        for name, idx in by_task.items():
            dev = pred[name].device
            sel = torch.tensor([src[i] for i in idx], device=dev)
            us = [rows[i][2] for i in idx]
            masks = torch.stack([targets[u].mask for u in us]).to(dev)
            tids = torch.tensor([targets[u].target_id for u in us], device=dev)
            ref = torch.stack([clean[i][name] for i in idx])
            vals = self.tasks[name].perturbation_score(pred[name][sel], ref, masks, tids, self.settings.score)
            for i, v in zip(idx, vals.double().cpu().tolist(), strict=True):
                q, j, u = rows[i]
                out[(q, u)][j] = v


def perturbed_image(x0: torch.Tensor, plan: CurvePlan, k: int, np_image: np.ndarray | None = None,
                    fills: dict[object, torch.Tensor | None] | None = None) -> torch.Tensor:
    """The image ``(C, H, W)`` of ``plan`` after ``k`` steps (the engine's images, one at a time: the app shows
    them). ``fills`` caches image-valued fills of this image between calls."""
    np_image = x0.detach().cpu().numpy() if np_image is None else np_image
    fills = {} if fills is None else fills
    mask = plan.changed[k - 1] if plan.changed is not None and k > 0 else plan.step_map < k
    changed = torch.from_numpy(np.ascontiguousarray(mask)).to(x0.device)
    if changed.dim() == 2:
        changed = changed[None]
    if plan.step_fill is not None:
        other = torch.full_like(x0, float(plan.step_fill[max(k - 1, 0)]))
    elif plan.fill.kind == "quantus":
        assert plan.fill_table is not None
        table = torch.from_numpy(plan.fill_table).to(x0.device)
        idx = torch.from_numpy(np.minimum(plan.step_map, max(plan.n_steps - 1, 0)).astype(np.int64))
        gathered = table[idx.to(x0.device)]
        other = (gathered if gathered.dim() == 3 else gathered[None]).expand_as(x0)
    elif plan.fill.kind == "road":
        as_bool = np.asarray(mask, dtype=bool)
        removed: np.ndarray = as_bool if as_bool.ndim == 2 else np.asarray(as_bool.any(0))
        draws: Any = plan.extra.get("noise_draws", {})  # a metric's replayed noise per step
        pixels: Any = plan.extra.get("road_pixels", {})  # and Quantus' order of the removed pixels
        other = torch.from_numpy(road_image(np_image, removed, plan.fill, draws.get(k), pixels.get(k)))
        other = other.to(x0.device)
    else:
        if plan.fill not in fills:
            img = fill_image(np_image, plan.fill)
            fills[plan.fill] = None if img is None else torch.from_numpy(img).to(x0.device)
        got = fills[plan.fill]
        assert got is not None
        other = got
    return torch.where(changed, other, x0) if plan.direction == "deletion" else torch.where(changed, x0, other)
