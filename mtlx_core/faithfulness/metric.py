"""The metric contract of the faithfulness family, the orderings, statuses and the result of one score.

A metric is one small class (one file each, registered in ``registry.py``):

- ``kind = "curve"``: ``plan(ctx, ranking, reverse)`` returns the ``CurvePlan`` of one curve (how the image is
  divided, in which order groups are perturbed, with which fill, which steps are evaluated);
  ``summarise(curve)`` turns the curve (task scalar / clean scalar at ``plan.steps``) into ``(score,
  score_norm)``. The engine (``engine.py``) does every forward.
- ``kind = "map"``: ``score_map(saliency, mask)`` scores the map against the target's pixel set, no forwards
  (the localisation metrics).
- ``kind = "derived"``: computed from other metrics' stored results (AbPC from MoRF and LeRF curves).

``score`` is the metric's own number as its reference defines it (IROF's AOC, RISE's AUC, ...);
``score_norm`` is that number scaled to [0, 1] for a curve within [0, 1] and oriented so that higher means
more faithful (``1 - AUC`` for deletion), which makes margins over chance comparable across metrics.

Orderings (D24): ``morf`` (most relevant first: the explanation's order), ``lerf`` (least relevant first:
that order reversed), ``random`` (``n_random`` seeded maps ``default_rng(seed + j).random((H, W))``, j = 0..K-1,
the same for every model and every target of a study: common random numbers).

Statuses: ``ok``; ``empty_target`` (no pixel in the target's set), ``zero_clean_score`` (the clean scalar is 0
or not finite: no curve can be normalised), ``zero_saliency`` (a constant map has no order; random orderings are
still scored), ``single_segment`` (a segment-based metric found one segment: no order to judge),
``undefined_score`` (the curve was computed but its summary is not a number, e.g. Faithfulness Correlation's
Pearson r of a curve that never moves; the curve is kept). Only ``ok``
rows carry a score; every other status has ``score = None`` and never enters a mean (D28).
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Hashable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from mtlx_core.explain.superpixels import Superpixels
from mtlx_core.faithfulness.plan import CurvePlan

ORDERINGS: tuple[str, ...] = ("morf", "lerf", "random")
STATUSES: tuple[str, ...] = ("ok", "empty_target", "zero_clean_score", "zero_saliency", "single_segment",
                             "undefined_score")
KINDS: tuple[str, ...] = ("curve", "map", "derived")
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # NumPy >= 2.0 / older


def trapezoid(y: np.ndarray, dx: float = 1.0) -> float:
    return float(_trapezoid(y, dx=dx))


@dataclass(frozen=True)
class ImageContext:
    """What a metric may use to plan the curves of one image."""

    index: int
    image: np.ndarray  # (C, H, W) float32
    superpixels: Superpixels | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[2])


class Metric(ABC):
    """One faithfulness metric; ``settings`` is a frozen dataclass recorded with every score."""

    name: ClassVar[str]
    kind: ClassVar[str] = "curve"
    #: the family it reproduces, for docs and the app
    reference: ClassVar[str] = ""
    #: True when the metric divides the image into SLIC segments (status ``single_segment`` applies)
    uses_superpixels: ClassVar[bool] = False
    settings: Any
    #: per-metric overrides of the study's orderings and random replicates (``build_metrics`` options
    #: ``orderings`` and ``n_random``); None: the study's (``FamilySettings``)
    orderings: tuple[str, ...] | None = None
    n_random: int | None = None

    @property
    def label(self) -> str:
        """The name stored in the ``faithfulness`` table (an instance may refine it, e.g. AbPC of a metric)."""
        return self.name

    def settings_dict(self, shape: tuple[int, int] | None = None) -> dict[str, object]:
        """Settings as recorded, with every pixel-given default resolved for images of ``shape``."""
        return asdict(self.settings) if self.settings is not None else {}

    def plan(self, ctx: ImageContext, ranking: np.ndarray, reverse: bool, root: Hashable) -> CurvePlan:
        """The curve of ``ranking`` (a map ``(H, W)``, most relevant = highest), reversed when asked."""
        raise NotImplementedError(f"metric {self.name!r} has no curves")

    def summarise(self, curve: np.ndarray, plan: CurvePlan) -> tuple[float, float]:
        """``(score, score_norm)`` of a normalised curve."""
        raise NotImplementedError(f"metric {self.name!r} has no curves")

    def score_map(self, saliency: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
        """``(score, score_norm)`` of a map against the target's pixel set (``kind == "map"``)."""
        raise NotImplementedError(f"metric {self.name!r} does not score maps")


@dataclass(frozen=True, eq=False)
class FaithResult:
    """One score: one (image, target, explainer, metric, ordering, random replicate)."""

    image_index: int
    task: str
    target_id: int
    target_name: str
    explainer: str
    metric: str
    ordering: str
    replicate: int
    seed: int | None
    curve: np.ndarray  # normalised task scalar at ``x`` (empty when not computed)
    x: np.ndarray  # share of the image perturbed at each curve point
    score: float | None
    score_norm: float | None
    status: str
    clean_score: float
    n_steps: int
    settings: dict[str, object]

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def share_perturbed(plan: CurvePlan) -> np.ndarray:
    """Share of the image's pixels (features, for a ``(C, H, W)`` step map) perturbed after each evaluated step;
    for curves with explicit ``changed`` sets, the share of each step's set (0 at step 0)."""
    if plan.changed is not None:
        shares = np.concatenate([[0.0], plan.changed.reshape(len(plan.changed), -1).mean(axis=1)])
        return shares[plan.steps]
    counts = np.bincount(plan.step_map.ravel(), minlength=plan.n_steps + 1)[: plan.n_steps]
    done = np.concatenate([[0], np.cumsum(counts)]) / plan.step_map.size
    return done[plan.steps]


def random_map(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """The random ordering's map (D21, D24): ``default_rng(seed).random(shape)``; it depends on the seed and the
    image size only, never on the model, the target or the batch."""
    return np.random.default_rng(seed).random(shape)
