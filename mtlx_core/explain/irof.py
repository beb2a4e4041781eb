"""IROF: Iterative Removal Of Features (Rieger & Hansen 2020, https://arxiv.org/abs/2003.08747), decisions D16-D21.

For one image, one target and one saliency map: SLIC segments (computed once per image, ``superpixels``) are
ordered by mean saliency, highest first; segment after segment is replaced by a fill value, cumulatively; the
task scalar of the perturbed image (``task.irof_scores``, on the target's pixel set fixed from the clean
prediction) divided by its clean value gives the curve (L values, one per removed segment, as Quantus);
``aoc = n_segments - trapezoid(curve, dx=1)`` and ``aoc_norm = aoc / n_segments``.

Public API::

    results = irof(model, images, explanations, superpixels, tasks)      # -> list[IrofResult]
    r.curve, r.aoc, r.aoc_norm, r.n_segments, r.ordering, r.status, r.settings

``explanations`` may be ``gradcam.Explanation`` objects or ``IrofRequest(image_index, target, saliency)``.
Beside each request the baselines of ``settings.baselines`` are scored (D21): ``random`` (the uniform random
pixel map ``np.random.default_rng(seed).random((H, W))``; the seed is recorded) and ``reversed`` (the
saliency order, least important first).

Fill modes (D18): ``quantus`` = one scalar, the mean of the current perturbed image over channels and pixels,
recomputed before every removal (NumPy's float32 mean replayed step by step, as Quantus computes it);
``fixed`` = the per-channel mean of the original image. Every perturbed image of every request is built
vectorised from two small tables (rank of each segment, fill value of each rank) and forwarded in chunks
that mix targets, images and orderings of one task; an image needed by several curves (same image, same
first k segments: e.g. the random curves of all targets of an image) is forwarded once. Nothing couples the
rows of a chunk, and with the default forwards (``ForwardSettings.batch1_numerics``) every row is
bit-identical to the eager model's forward of that one image, so a score never depends on what shares its
batch, and the perturbed images and predictions are exactly those of Quantus' per-image loop.
Ties in mean saliency are broken by ``np.argsort``'s default, as Quantus.
Statuses: ``ok``; ``single_segment`` (computed; the AOC is 1); ``zero_saliency``, ``empty_target`` and
``zero_clean_score`` (not computed, NaN).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn

from mtlx_core.explain.fastforward import FastForward, ForwardSettings
from mtlx_core.explain.perturbation import (
    FILL_MODES,
    CurveTables,
    PrefixIndex,
    perturbed_images,
    quantus_fills,
    random_saliency,
    segment_order,
)
from mtlx_core.explain.superpixels import SlicSettings, Superpixels
from mtlx_core.tasks.base import ExplanationTarget, Task

logger = logging.getLogger(__name__)

BASELINES: tuple[str, ...] = ("random", "reversed")
#: largest default chunk: on CPU, batches of 16-32 small images run faster per image than 64 (cache)
MAX_CHUNK = 32
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # NumPy >= 2.0 / older


@dataclass(frozen=True)
class IrofSettings:
    """What makes an IROF number reproducible (plus the knobs that only change speed)."""

    fill_mode: str = "quantus"
    baselines: tuple[str, ...] = BASELINES
    seed: int = 0
    chunk_size: int | None = None  # perturbed images per forward; None: sized to memory_budget_mb
    memory_budget_mb: int = 1024
    forward: ForwardSettings = field(default_factory=ForwardSettings)

    def __post_init__(self) -> None:
        if self.fill_mode not in FILL_MODES:
            raise ValueError(f"unknown fill mode {self.fill_mode!r}; valid modes: {', '.join(FILL_MODES)}")
        bad = [b for b in self.baselines if b not in BASELINES]
        if bad:
            raise ValueError(f"unknown baseline(s) {bad}; valid baselines: {', '.join(BASELINES)}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class SaliencyItem(Protocol):
    image_index: int
    target: ExplanationTarget

    @property
    def saliency(self) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class IrofRequest:
    """One saliency map to score: ``saliency`` ``(H, W)`` for ``target`` of image ``image_index``."""

    image_index: int
    target: ExplanationTarget
    saliency: np.ndarray
    saliency_method: str = "gradcam"


@dataclass(frozen=True, eq=False)
class IrofResult:
    """One IROF curve; ``ordering`` is ``saliency``, ``reversed`` or ``random``."""

    image_index: int
    task: str
    target_id: int
    target_name: str
    saliency_method: str
    ordering: str
    curve: np.ndarray  # (n_segments,) float64: score after k removals / clean score, k = 1..n
    aoc: float
    aoc_norm: float
    n_segments: int
    clean_score: float
    status: str
    seed: int | None
    settings: IrofSettings
    slic: SlicSettings


@dataclass
class _Curve:
    request: int
    ordering: str
    order: np.ndarray | None = None
    fills: np.ndarray | None = None
    seed: int | None = None


def _saliency_2d(item: SaliencyItem, shape: tuple[int, int]) -> np.ndarray:
    sal = np.asarray(item.saliency.detach().cpu() if isinstance(item.saliency, torch.Tensor) else item.saliency)
    if sal.ndim == 3 and sal.shape[0] == 1:
        sal = sal[0]
    if sal.shape != shape:
        raise ValueError(f"saliency of image {item.image_index} has shape {sal.shape}, expected {shape}")
    return sal.astype(np.float32)


def _plan(items: Sequence[SaliencyItem], images: np.ndarray, superpixels: Sequence[Superpixels],
          clean_scores: np.ndarray, settings: IrofSettings) -> tuple[list[_Curve], list[str]]:
    """Orders and fill values of every curve, and each request's status."""
    curves: list[_Curve] = []
    statuses: list[str] = []
    fill_cache: dict[tuple[int, bytes], np.ndarray] = {}
    for r, item in enumerate(items):
        sp = superpixels[item.image_index]
        sal = _saliency_2d(item, sp.labels.shape)
        status = "single_segment" if sp.n_segments == 1 else "ok"
        if item.target.n_pixels == 0:
            status = "empty_target"
        elif not np.isfinite(clean_scores[r]) or clean_scores[r] == 0:
            status = "zero_clean_score"
        statuses.append(status)
        for name in ("saliency", *settings.baselines):
            c = _Curve(r, name)
            curves.append(c)
            if status in ("empty_target", "zero_clean_score"):
                continue
            if name == "random":
                c.seed = settings.seed
                c.order = segment_order(random_saliency(settings.seed, sal.shape), sp.labels, sp.n_segments)
            elif sal.max() > sal.min():
                c.order = segment_order(sal, sp.labels, sp.n_segments)
                if name == "reversed":
                    c.order = c.order[::-1].copy()
            if c.order is not None and settings.fill_mode == "quantus":
                key = (item.image_index, c.order.tobytes())
                if key not in fill_cache:
                    fill_cache[key] = quantus_fills(images[item.image_index], sp.labels, c.order)
                c.fills = fill_cache[key]
    return curves, statuses


def _chunk_size(fwd: FastForward, task: str, images: torch.Tensor, settings: IrofSettings) -> int:
    if settings.chunk_size is not None:
        return max(1, settings.chunk_size)
    per_image = fwd.activation_bytes_per_image(task, images[:1])
    return int(min(MAX_CHUNK, max(1, settings.memory_budget_mb * 2**20 // per_image)))


def _run_task(task: Task, curves: list[_Curve], items: Sequence[SaliencyItem], images: torch.Tensor,
              labels: torch.Tensor, clean: torch.Tensor, fwd: FastForward, chunk: int,
              fill_mode: str) -> dict[tuple[int, int], float]:
    """Scores ``{(curve, k): score}`` of every curve of one task; each distinct perturbed image forwarded once."""
    qs = [q for q, c in enumerate(curves) if c.order is not None]
    tables = CurveTables.build([curves[q].order for q in qs], [curves[q].fills for q in qs],
                               [items[curves[q].request].image_index for q in qs])
    masks = torch.stack([items[curves[q].request].target.mask for q in qs]).to(images.device)
    tids = torch.tensor([items[curves[q].request].target.target_id for q in qs], device=images.device)
    prefixes = PrefixIndex()
    first: dict[int, tuple[int, int]] = {}  # distinct image id -> (local curve, k) that builds it
    users: dict[int, list[tuple[int, int]]] = {}
    for lq, q in enumerate(qs):
        for k, uid in enumerate(prefixes.ids(int(tables.image_of[lq]), curves[q].order), start=1):
            first.setdefault(uid, (lq, k))
            users.setdefault(uid, []).append((lq, k))
    uids = list(first)
    scores: dict[tuple[int, int], float] = {}
    for start in range(0, len(uids), chunk):
        part = uids[start:start + chunk]
        x = perturbed_images(images, labels, tables, torch.tensor([first[u][0] for u in part]),
                             torch.tensor([first[u][1] for u in part]), fill_mode)
        pred = fwd(task.name, x)
        rows = [(i, lq, k) for i, u in enumerate(part) for lq, k in users[u]]
        src = torch.tensor([i for i, _, _ in rows], device=pred.device)
        lqs = torch.tensor([lq for _, lq, _ in rows], device=pred.device)
        img = tables.image_of[lqs.cpu()].to(pred.device)
        s = task.irof_scores(pred[src], clean[img], masks[lqs], tids[lqs]).double().cpu().tolist()
        scores.update(((qs[lq], k), v) for (_, lq, k), v in zip(rows, s, strict=True))
    return scores


def _clean_score(task: Task, clean: torch.Tensor, target: ExplanationTarget) -> float:
    """The task scalar of the unperturbed image (the curve's denominator)."""
    pred = clean[None]
    ids = torch.tensor([target.target_id], device=pred.device)
    return float(task.irof_scores(pred, pred, target.mask[None].to(pred.device), ids)[0])


def irof(model: nn.Module, images: torch.Tensor, explanations: Sequence[SaliencyItem],
         superpixels: Sequence[Superpixels], tasks: Mapping[str, Task], settings: IrofSettings | None = None,
         forward: FastForward | None = None) -> list[IrofResult]:
    """IROF of every explanation and its baselines; results ordered by request, then ordering."""
    settings = settings or IrofSettings()
    if images.dim() != 4 or len(superpixels) != images.shape[0]:
        raise ValueError(f"need images (N, 3, H, W) and one Superpixels per image; got {tuple(images.shape)} "
                         f"and {len(superpixels)} superpixels")
    missing = sorted({e.target.task for e in explanations} - set(tasks))
    if missing:
        raise ValueError(f"no Task object given for task(s) {missing}; given: {', '.join(tasks)}")
    fwd = forward or FastForward(model, settings.forward)
    device = next(iter(model.parameters()), torch.empty(0)).device
    images = images.detach().to(device=device, dtype=torch.float32)
    labels = torch.stack([torch.from_numpy(sp.labels) for sp in superpixels]).to(device)
    task_names = sorted({e.target.task for e in explanations})
    chunk = {t: _chunk_size(fwd, t, images, settings) for t in task_names}
    clean = {t: torch.cat([fwd(t, images[i:i + chunk[t]]) for i in range(0, len(images), chunk[t])])
             for t in task_names}
    clean_scores = np.array([_clean_score(tasks[e.target.task], clean[e.target.task][e.image_index], e.target)
                             for e in explanations])
    curves, statuses = _plan(explanations, images.cpu().numpy(), superpixels, clean_scores, settings)
    scores: dict[tuple[int, int], float] = {}
    for t in task_names:
        mine = [c if explanations[c.request].target.task == t else _Curve(c.request, c.ordering) for c in curves]
        if any(c.order is not None for c in mine):
            scores.update(_run_task(tasks[t], mine, explanations, images, labels, clean[t], fwd, chunk[t],
                                    settings.fill_mode))
    return [_result(q, c, explanations, superpixels, clean_scores, statuses, scores, settings)
            for q, c in enumerate(curves)]


def _result(q: int, c: _Curve, items: Sequence[SaliencyItem], superpixels: Sequence[Superpixels],
            clean_scores: np.ndarray, statuses: list[str], scores: dict[tuple[int, int], float],
            settings: IrofSettings) -> IrofResult:
    item = items[c.request]
    sp = superpixels[item.image_index]
    status = statuses[c.request]
    if c.order is None:
        curve, aoc = np.full(0, np.nan), float("nan")
        status = "zero_saliency" if status in ("ok", "single_segment") else status
    else:
        curve = np.array([scores[(q, k)] for k in range(1, len(c.order) + 1)]) / clean_scores[c.request]
        aoc = float(len(curve) - _trapezoid(curve, dx=1))
    return IrofResult(
        image_index=item.image_index, task=item.target.task, target_id=item.target.target_id,
        target_name=item.target.name, saliency_method=getattr(item, "saliency_method", "gradcam"),
        ordering=c.ordering, curve=curve, aoc=aoc, aoc_norm=aoc / sp.n_segments, n_segments=sp.n_segments,
        clean_score=float(clean_scores[c.request]), status=status, seed=c.seed, settings=settings,
        slic=sp.settings)
