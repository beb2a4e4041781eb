"""DiSparse masks (Sun et al., CVPR 2022, https://arxiv.org/abs/2206.04662; decision D7, algorithms 2.2).

Each task rates the weights of its own sub-network (every shared weight plus the weights it owns: its head,
and for MTAN its attention modules) and keeps its global top ``keep_ratio`` share. A shared weight survives when
any task keeps it (the union: pruned only if all tasks agree); a task's own weights keep that task's mask.
Ratings:

- ``snip_scores`` (static variant, at initialisation): ``|dL_task/dw * w|`` accumulated over a few batches;
- ``magnitude_scores`` (the "pt" variant used on trained NYUv2/Cityscapes models): ``|w|``.

Because the union densifies the shared trunk, the keep ratio that gives a target sparsity is found by bisection
on the measured global sparsity over all Conv2d / Linear weights (``calibrated_masks``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from mtlx_core.models.base import SHARED, MultiTaskModel
from mtlx_core.prune.masks import prunable_weights
from mtlx_core.prune.method import PruningMethod, Selection, SelectionContext
from mtlx_core.tasks import Task

logger = logging.getLogger(__name__)

Scores = dict[str, dict[str, torch.Tensor]]  # task -> weight name -> score (weight's shape)
#: the measured sparsity must be this close to the target (0.5 percentage points)
TOLERANCE = 0.005
DISPARSE_GRID = (0.5, 0.7, 0.8, 0.9)


def task_weights(model: MultiTaskModel, task: str) -> list[str]:
    """Prunable weights of ``task``'s sub-network: shared ones and those ``task`` owns."""
    return [n for n in prunable_weights(model) if model.module_owner(n) in (SHARED, task)]


def magnitude_scores(model: MultiTaskModel) -> Scores:
    """``|w|`` of every weight of each task's sub-network."""
    weights = prunable_weights(model)
    return {t: {n: weights[n].detach().abs().float().cpu() for n in task_weights(model, t)}
            for t in model.task_names}


def snip_scores(model: MultiTaskModel, batches: Iterable[dict[str, torch.Tensor]], tasks: Mapping[str, Task],
                device: str | torch.device = "cpu") -> Scores:
    """``sum over batches of |dL_task/dw * w|`` per task, computed on a copy (``model`` is not changed)."""
    net = copy.deepcopy(model).to(device).train()
    names = {t: task_weights(net, t) for t in tasks}
    params = dict(net.named_parameters())
    scores: Scores = {t: {n: torch.zeros_like(params[n], device="cpu") for n in names[t]} for t in tasks}
    n_batches = 0
    for batch in batches:
        out = net(batch["image"].to(device))
        for i, (t, task) in enumerate(tasks.items()):
            loss = task.loss(out[t], batch[t].to(device))
            grads = torch.autograd.grad(loss, [params[n] for n in names[t]], retain_graph=i < len(tasks) - 1,
                                        allow_unused=True)
            for n, g in zip(names[t], grads, strict=True):
                if g is not None:
                    scores[t][n] += (g * params[n]).detach().abs().cpu()
        n_batches += 1
    if n_batches == 0:
        raise ValueError("snip_scores needs at least one batch")
    return scores


class _TopK:
    """Per-task orderings over one flat index space of all prunable weights."""

    def __init__(self, shapes: Mapping[str, torch.Size], scores: Scores) -> None:
        self.shapes = dict(shapes)
        self.offsets: dict[str, int] = {}
        total = 0
        for name, shape in self.shapes.items():
            self.offsets[name] = total
            total += shape.numel()
        self.total = total
        self.order: dict[str, torch.Tensor] = {}
        for t, sc in scores.items():
            idx = torch.cat([torch.arange(self.offsets[n], self.offsets[n] + sc[n].numel()) for n in sc])
            vals = torch.cat([sc[n].flatten().float() for n in sc])
            self.order[t] = idx[torch.argsort(vals, descending=True, stable=True)]

    def flat(self, keep_ratio: float) -> torch.Tensor:
        kept = torch.zeros(self.total, dtype=torch.bool)
        for order in self.order.values():
            k = min(order.numel(), max(1, round(keep_ratio * order.numel())))
            kept[order[:k]] = True
        return kept

    def masks(self, keep_ratio: float) -> dict[str, torch.Tensor]:
        kept = self.flat(keep_ratio)
        return {n: kept[self.offsets[n]:self.offsets[n] + s.numel()].view(s) for n, s in self.shapes.items()}


def disparse_masks(model: MultiTaskModel, scores: Scores, keep_ratio: float) -> dict[str, torch.Tensor]:
    """Boolean masks (True = kept) of every prunable weight for one keep ratio: per-task top-k, shared union."""
    shapes = {n: w.shape for n, w in prunable_weights(model).items()}
    return _TopK(shapes, scores).masks(keep_ratio)


@dataclass(frozen=True)
class Calibration:
    keep_ratio: float
    sparsity: float  # measured share of pruned entries over all Conv2d / Linear weights
    steps: int


def calibrated_masks(model: MultiTaskModel, scores: Scores, target: float,
                     tolerance: float = TOLERANCE) -> tuple[dict[str, torch.Tensor], Calibration]:
    """Masks whose global sparsity is within ``tolerance`` of ``target``, the keep ratio found by bisection."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"target sparsity must be in (0, 1), got {target}")
    shapes = {n: w.shape for n, w in prunable_weights(model).items()}
    topk = _TopK(shapes, scores)
    lo, hi = 0.0, 1.0  # sparsity decreases as the keep ratio grows
    best: tuple[float, float] | None = None
    steps = 0
    for steps in range(1, 61):  # noqa: B007 - the count is reported
        mid = (lo + hi) / 2
        sparsity = 1.0 - int(topk.flat(mid).sum()) / topk.total
        if best is None or abs(sparsity - target) < abs(best[1] - target):
            best = (mid, sparsity)
        if abs(sparsity - target) < tolerance / 10:
            break
        if sparsity > target:
            lo = mid
        else:
            hi = mid
    assert best is not None
    keep, sparsity = best
    if abs(sparsity - target) > tolerance:
        raise ValueError(f"could not reach sparsity {target:.4f} within {tolerance}: best {sparsity:.4f} "
                         f"(model too small?)")
    logger.info("DiSparse keep ratio %.5f gives sparsity %.4f (target %.4f, %d bisection steps)",
                keep, sparsity, target, steps)
    return topk.masks(keep), Calibration(keep, sparsity, steps)


class DiSparse(PruningMethod):
    """DiSparse as a registered method: ``static`` (SNIP-like scores on the dense run's own initialisation,
    re-created from its seed, then trained with the dense recipe) or ``magnitude`` (the trained weights)."""

    name = "disparse"
    structured = False
    variants = ("static", "magnitude")
    grid = DISPARSE_GRID

    def needs_parent_weights(self, variant: str | None) -> bool:
        return variant != "static"

    def select(self, ctx: SelectionContext) -> Selection:
        from mtlx_core.tasks import build_tasks
        from mtlx_core.train.batches import training_batches
        from mtlx_core.train.loop import build_for, init_depth_bias

        cfg = ctx.finetune
        if ctx.variant == "static":  # the dense run's own initialisation, re-created from its seed
            tasks = build_tasks(ctx.train_ds.spec, cfg.tasks)
            torch.manual_seed(cfg.seed)  # exactly as train() builds it
            model = build_for(cfg, tasks)
            if cfg.depth_bias_init and "depth" in tasks:
                init_depth_bias(model, ctx.train_ds)
            torch.manual_seed(cfg.seed)  # dropout during scoring
            batches = training_batches(ctx.train_ds, cfg.batch_size, cfg.seed, 0, ctx.preset.score_batches,
                                       getattr(ctx.train_ds, "seeded_augment", None))
            scores = snip_scores(model, batches, tasks, ctx.device)
        else:
            assert ctx.model is not None
            model = ctx.model
            scores = magnitude_scores(model)
        masks, cal = calibrated_masks(model, scores, ctx.sparsity)
        return Selection(masks=masks, model=model, details={"keep_ratio": cal.keep_ratio,
                                                            "score_batches": ctx.preset.score_batches})
