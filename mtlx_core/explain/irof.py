"""IROF (Rieger & Hansen 2020) with its sanity baselines, as the paper ran it: one configuration of the
faithfulness engine (``mtlx_core.faithfulness``, metric ``irof``), kept as a small API for the Live page, the
Quantus agreement tests and the benchmarks.

Public API::

    results = irof(model, images, explanations, superpixels, tasks)      # -> list[IrofResult]
    r.curve, r.aoc, r.aoc_norm, r.n_segments, r.ordering, r.status, r.settings

Per explanation: the ``saliency`` curve and the baselines of ``settings.baselines`` (D21): ``random`` (the
map ``np.random.default_rng(seed).random((H, W))``, seed recorded; the engine's random ordering, replicate 0)
and ``reversed`` (the engine's least-relevant-first ordering). Statuses as the engine's (``ok``,
``zero_saliency``, ``empty_target``, ``zero_clean_score``, ``single_segment``); only ``ok`` has numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from mtlx_core.explain.fastforward import FastForward, ForwardSettings
from mtlx_core.explain.perturbation import FILL_MODES
from mtlx_core.explain.superpixels import SlicSettings, Superpixels
from mtlx_core.faithfulness.engine import Engine, EngineSettings
from mtlx_core.faithfulness.evaluate import FamilySettings, SaliencyItem, evaluate
from mtlx_core.faithfulness.irof import Irof
from mtlx_core.tasks.base import ExplanationTarget, Task

BASELINES: tuple[str, ...] = ("random", "reversed")
_ORDERING = {"morf": "saliency", "lerf": "reversed", "random": "random"}


@dataclass(frozen=True)
class IrofSettings:
    """What makes an IROF number reproducible (plus the knobs that only change speed)."""

    fill_mode: str = "quantus"
    baselines: tuple[str, ...] = BASELINES
    seed: int = 0
    chunk_size: int | None = None  # perturbed images per forward; None: sized to memory_budget_mb
    #: MiB for a chunk's activations; None: from the device (``mtlx_core.faithfulness.memory``: on CUDA the free
    #: memory x ``gpu_share`` x 0.5, on CPU 1024)
    memory_budget_mb: int | None = None
    forward: ForwardSettings = field(default_factory=ForwardSettings)
    gpu_share: float = 1.0  # the fraction of the GPU this process may use, in (0, 1]

    def __post_init__(self) -> None:
        if self.fill_mode not in FILL_MODES:
            raise ValueError(f"unknown fill mode {self.fill_mode!r}; valid modes: {', '.join(FILL_MODES)}")
        bad = [b for b in self.baselines if b not in BASELINES]
        if bad:
            raise ValueError(f"unknown baseline(s) {bad}; valid baselines: {', '.join(BASELINES)}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def family(self) -> FamilySettings:
        orderings = ("morf", *(["lerf"] if "reversed" in self.baselines else []),
                     *(["random"] if "random" in self.baselines else []))
        return FamilySettings(orderings=orderings, n_random=1, seed=self.seed, engine=EngineSettings(
            chunk_size=self.chunk_size, memory_budget_mb=self.memory_budget_mb, forward=self.forward,
            gpu_share=self.gpu_share))


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


def irof(model: nn.Module, images: torch.Tensor, explanations: Sequence[SaliencyItem],
         superpixels: Sequence[Superpixels], tasks: Mapping[str, Task], settings: IrofSettings | None = None,
         forward: FastForward | None = None) -> list[IrofResult]:
    """IROF of every explanation and its baselines; results ordered by request, then ordering."""
    settings = settings or IrofSettings()
    if images.dim() != 4 or len(superpixels) != images.shape[0]:
        raise ValueError(f"need images (N, 3, H, W) and one Superpixels per image; got {tuple(images.shape)} "
                         f"and {len(superpixels)} superpixels")
    family = settings.family()
    engine = Engine(model, tasks, family.engine, forward) if forward is not None else None
    found = evaluate(model, images, explanations, tasks, [Irof(settings.fill_mode)], family, superpixels, engine)
    own = {(r.image_index, r.task, r.target_id, r.ordering): r for r in found if r.ordering != "random"}
    rnd = {(r.image_index, r.task, r.target_id): r for r in found if r.ordering == "random"}
    out = []
    for it in explanations:
        key = (it.image_index, it.target.task, it.target.target_id)
        for o in ("morf", "lerf", "random"):
            r = rnd.get(key) if o == "random" else own.get((*key, o))
            if r is None or o not in family.orderings:
                continue
            sp = superpixels[it.image_index]
            method = getattr(it, "saliency_method", "gradcam") if o != "random" else "random"
            out.append(IrofResult(
                image_index=it.image_index, task=r.task, target_id=r.target_id, target_name=r.target_name,
                saliency_method=method, ordering=_ORDERING[o], curve=r.curve,
                aoc=float("nan") if r.score is None else r.score,
                aoc_norm=float("nan") if r.score_norm is None else r.score_norm, n_segments=sp.n_segments,
                clean_score=r.clean_score, status=r.status, seed=r.seed, settings=settings, slic=sp.settings))
    return out
