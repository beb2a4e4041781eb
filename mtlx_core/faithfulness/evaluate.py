"""Score saliency maps with any set of faithfulness metrics: ``evaluate`` plans every curve of every image, runs
the engine (no score depends on the other images) and summarises (decisions D16-D21, D24, D28).

Public API::

    results = evaluate(model, images, items, tasks, metrics, FamilySettings(), superpixels)
    # items: objects with image_index, target (ExplanationTarget), saliency (H, W) and optionally explainer
    # -> list[FaithResult]: per item and metric, MoRF / LeRF rows; per distinct (image, task, target) and metric,
    #    one random row per replicate (explainer "random"); map metrics and derived metrics (AbPC) too.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn

from mtlx_core.explain.superpixels import Superpixels
from mtlx_core.faithfulness.engine import Engine, EngineSettings
from mtlx_core.faithfulness.metric import (
    ORDERINGS,
    FaithResult,
    ImageContext,
    Metric,
    random_map,
    share_perturbed,
)
from mtlx_core.faithfulness.plan import CurvePlan
from mtlx_core.tasks.base import ExplanationTarget, Task

logger = logging.getLogger(__name__)


class SaliencyItem(Protocol):
    @property
    def image_index(self) -> int: ...

    @property
    def target(self) -> ExplanationTarget: ...

    @property
    def saliency(self) -> np.ndarray | torch.Tensor: ...


@dataclass(frozen=True)
class FamilySettings:
    """What makes a family of scores reproducible: orderings, random replicates, seed, engine options."""

    orderings: tuple[str, ...] = ORDERINGS
    n_random: int = 5
    seed: int = 0
    engine: EngineSettings = field(default_factory=EngineSettings)

    def __post_init__(self) -> None:
        bad = [o for o in self.orderings if o not in ORDERINGS]
        if bad:
            raise ValueError(f"unknown ordering(s) {bad}; valid orderings: {', '.join(ORDERINGS)}")
        if self.n_random < 1 and "random" in self.orderings:
            raise ValueError(f"n_random must be at least 1 with the random ordering, got {self.n_random}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def saliency_2d(item: SaliencyItem, shape: tuple[int, int]) -> np.ndarray:
    s = item.saliency
    sal = np.asarray(s.detach().cpu() if isinstance(s, torch.Tensor) else s)
    if sal.ndim == 3 and sal.shape[0] == 1:
        sal = sal[0]
    if sal.shape != shape:
        raise ValueError(f"saliency of image {item.image_index} has shape {sal.shape}, expected {shape}")
    return sal.astype(np.float32)


def explainer_of(item: SaliencyItem) -> str:
    return str(getattr(item, "explainer", None) or getattr(item, "saliency_method", None) or "gradcam")


@dataclass
class _Slot:
    """One result to build: item ``r``, metric, ordering, replicate, and its plan (None: not computed)."""

    r: int
    metric: Metric
    ordering: str
    replicate: int
    status: str
    plan: CurvePlan | None = None
    plan_index: int = -1


def evaluate(model: nn.Module, images: torch.Tensor, items: Sequence[SaliencyItem], tasks: Mapping[str, Task],
             metrics: Sequence[Metric], settings: FamilySettings | None = None,
             superpixels: Sequence[Superpixels] | None = None, engine: Engine | None = None) -> list[FaithResult]:
    """Every metric of ``metrics`` for every item (see the module docstring)."""
    settings = settings or FamilySettings()
    if images.dim() != 4:
        raise ValueError(f"need images (N, C, H, W), got {tuple(images.shape)}")
    if any(m.uses_superpixels for m in metrics) and (superpixels is None or len(superpixels) != len(images)):
        raise ValueError("segment-based metrics need one Superpixels per image")
    missing = sorted({it.target.task for it in items} - set(tasks))
    if missing:
        raise ValueError(f"no Task object given for task(s) {missing}; given: {', '.join(tasks)}")
    engine = engine or Engine(model, tasks, settings.engine)
    works = []
    for i in sorted({it.image_index for it in items}):
        mine = [r for r, it in enumerate(items) if it.image_index == i]
        works.append(_plan_image(engine, images[i], i, items, mine, metrics, settings,
                                 superpixels[i] if superpixels is not None else None))
    plans: list[CurvePlan] = []
    users: list[list[int]] = []
    offsets = []
    for w in works:
        offsets.append(len(plans))
        plans += w.plans
        users += w.users
    targets = [it.target for it in items]
    values = (engine.run({w.i: w.image for w in works}, {w.i: w.clean for w in works}, plans, users, targets)
              if plans else {})
    recorded = dataclasses.replace(settings, engine=engine.settings)
    results: list[FaithResult] = []
    for w, off in zip(works, offsets, strict=True):
        out = [_curve_result(s, items, w.clean_score, values, _settings(s.metric, recorded, w.shape, w.sp), off)
               for s in w.slots]
        out += _map_results(items, w.mine, w.reps, w.base, w.sal, metrics, settings, w.clean_score, w.shape)
        out += _derived(out, metrics, w.shape)
        results += out
    return results


@dataclass
class _ImageWork:
    """The planned curves of one image and what summarising them needs."""

    i: int
    image: torch.Tensor
    clean: dict[str, torch.Tensor]
    sp: Superpixels | None
    shape: tuple[int, int]
    mine: list[int]
    sal: dict[int, np.ndarray]
    clean_score: dict[int, float]
    base: dict[int, str]
    reps: dict[tuple[str, int], int]
    slots: list[_Slot]
    plans: list[CurvePlan]
    users: list[list[int]]


def _plan_image(engine: Engine, image: torch.Tensor, i: int, items: Sequence[SaliencyItem], mine: list[int],
                metrics: Sequence[Metric], settings: FamilySettings, sp: Superpixels | None) -> _ImageWork:
    names = sorted({items[r].target.task for r in mine})
    clean = engine.clean(image, names)
    ctx = ImageContext(i, image.detach().cpu().numpy().astype(np.float32), sp)
    shape = ctx.shape
    sal = {r: saliency_2d(items[r], shape) for r in mine}
    clean_score, base = {}, {}
    for r in mine:
        t = items[r].target
        clean_score[r] = engine.clean_score(t.task, clean[t.task], t)
        base[r] = ("empty_target" if t.n_pixels == 0 else
                   "zero_clean_score" if not np.isfinite(clean_score[r]) or clean_score[r] == 0 else "ok")
    # one random curve per distinct target: targets explained by several explainers or layers share it
    reps: dict[tuple[str, int], int] = {}
    for r in mine:
        reps.setdefault((items[r].target.task, items[r].target.target_id), r)
    slots: list[_Slot] = []
    plans: list[CurvePlan] = []
    users: list[list[int]] = []
    for m in metrics:
        if m.kind != "curve":
            continue
        single = m.uses_superpixels and sp is not None and sp.n_segments == 1
        orderings, n_random = own_orderings(m, settings)
        for o in (x for x in orderings if x != "random"):
            for r in mine:
                st = base[r] if base[r] != "ok" else ("single_segment" if single else
                                                      "zero_saliency" if sal[r].max() <= sal[r].min() else "ok")
                slot = _Slot(r, m, o, 0, st)
                if st == "ok":
                    slot.plan = m.plan(ctx, sal[r], o == "lerf", (m.label, "saliency"))
                    slot.plan_index = len(plans)
                    plans.append(slot.plan)
                    users.append([r])
                slots.append(slot)
        if "random" in orderings:
            for j in range(n_random):
                live = [r for r in reps.values() if base[r] == "ok" and not single]
                plan = m.plan(ctx, random_map(settings.seed + j, shape), False, (m.label, "random")) if live else None
                if plan is not None:
                    plans.append(plan)
                    users.append(live)
                for r in reps.values():
                    st = base[r] if base[r] != "ok" else ("single_segment" if single else "ok")
                    slots.append(_Slot(r, m, "random", j, st, plan if st == "ok" else None, len(plans) - 1))
    return _ImageWork(i, image, clean, sp, shape, mine, sal, clean_score, base, reps, slots, plans, users)


def own_orderings(m: Metric, settings: FamilySettings) -> tuple[tuple[str, ...], int]:
    """The orderings and random replicates of metric ``m``: the study's, narrowed by the metric's own."""
    orderings = tuple(o for o in settings.orderings if m.orderings is None or o in m.orderings)
    return orderings, settings.n_random if m.n_random is None else m.n_random


def _settings(m: Metric, settings: FamilySettings, shape: tuple[int, int], sp: Superpixels | None
              ) -> dict[str, object]:
    e = settings.engine
    orderings, n_random = own_orderings(m, settings)
    out: dict[str, object] = {"metric": m.settings_dict(shape), "n_random": n_random, "orderings": list(orderings),
                              "seed": settings.seed, "forward": e.forward.to_dict(), "score": asdict(e.score)}
    if m.uses_superpixels and sp is not None:
        out["superpixels"] = sp.settings.to_dict()
    return out


def _curve_result(s: _Slot, items: Sequence[SaliencyItem], clean_score: dict[int, float],
                  values: dict[tuple[int, int], np.ndarray], recorded: dict[str, object], offset: int
                  ) -> FaithResult:
    it = items[s.r]
    curve, x = np.zeros(0), np.zeros(0)
    score = norm = None
    n_steps = 0
    status = s.status
    if s.plan is not None:
        curve = values[(s.plan_index + offset, s.r)] / clean_score[s.r]
        x = share_perturbed(s.plan)
        score, norm = s.metric.summarise(curve, s.plan)
        n_steps = s.plan.n_steps
        if not (np.isfinite(score) and np.isfinite(norm)):  # e.g. Pearson r of a constant curve
            status, score, norm = ("undefined_score" if s.status == "ok" else s.status), None, None
    rnd = s.ordering == "random"
    return FaithResult(
        image_index=it.image_index, task=it.target.task, target_id=it.target.target_id,
        target_name=it.target.name, explainer="random" if rnd else explainer_of(it), metric=s.metric.label,
        ordering=s.ordering, replicate=s.replicate,
        seed=int(recorded["seed"]) + s.replicate if rnd else None,  # type: ignore[call-overload]
        curve=curve, x=x, score=score, score_norm=norm, status=status, clean_score=clean_score[s.r],
        n_steps=n_steps, settings=recorded)


def _map_results(items: Sequence[SaliencyItem], mine: list[int], reps: dict[tuple[str, int], int],
                 base: dict[int, str], sal: dict[int, np.ndarray], metrics: Sequence[Metric],
                 settings: FamilySettings, clean_score: dict[int, float], shape: tuple[int, int]) -> list[FaithResult]:
    out = []
    for m in (m for m in metrics if m.kind == "map"):
        orderings, n_random = own_orderings(m, settings)
        jobs = [(r, "morf", 0, sal[r]) for r in mine] if "morf" in orderings else []
        if "random" in orderings:
            jobs += [(r, "random", j, random_map(settings.seed + j, shape).astype(np.float32))
                     for j in range(n_random) for r in reps.values()]
        for r, o, j, smap in jobs:
            it = items[r]
            st = "empty_target" if it.target.n_pixels == 0 else (
                "zero_saliency" if smap.max() <= smap.min() else "ok")
            score = norm = None
            if st == "ok":
                score, norm = m.score_map(smap, it.target.mask.cpu().numpy().astype(bool))
            rnd = o == "random"
            out.append(FaithResult(
                image_index=it.image_index, task=it.target.task, target_id=it.target.target_id,
                target_name=it.target.name, explainer="random" if rnd else explainer_of(it), metric=m.label,
                ordering=o, replicate=j, seed=settings.seed + j if rnd else None, curve=np.zeros(0),
                x=np.zeros(0), score=score, score_norm=norm, status=st, clean_score=clean_score[r], n_steps=0,
                settings={"metric": m.settings_dict(shape), "n_random": n_random, "seed": settings.seed}))
    return out


def _derived(results: list[FaithResult], metrics: Sequence[Metric], shape: tuple[int, int]) -> list[FaithResult]:
    out = []
    for m in (m for m in metrics if m.kind == "derived"):
        out += m.derive(results, shape)  # type: ignore[attr-defined]
    return out
