"""The ``Task`` contract: one object per task carries its loss, metrics and explanation targets.

Shapes (B = batch):
- segmentation: prediction ``(B, C, H, W)`` raw logits, target ``(B, H, W)`` long with ``-1`` = ignore
- depth:        prediction ``(B, 1, H, W)``, target ``(B, 1, H, W)`` with ``0`` = invalid
- normals:      prediction ``(B, 3, H, W)`` unit vectors, target ``(B, 3, H, W)`` with all-zero = invalid

A task registered by a plugin (``mtlx_core.plugins.register_task``) derives its target from the stored labels
of the dataset: it names them in ``sources`` (built-in task names) and computes one sample's target in
``derive_target``; the dataset calls it after loading (and again after augmentation), so everything else
(training, evaluation, explanations, faithfulness) sees ``batch[task.name]`` as for a built-in task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class ExplanationTarget:
    """One thing to explain in one image: a pixel set fixed from the clean prediction (decision D15).

    ``target_id`` is stable across images and models (class index, depth bin 0-4, octant 0-7) and
    ``name`` is what the app shows (``"wall"``, ``"bin 2 [0.4, 0.6)"``, ``"(+,-,+)"``).
    ``rule`` records how the set was chosen (``"class"``, ``"equal_width"``, ``"empirical_quantile"``,
    ``"octant"``); ``edges`` holds a depth bin's edges in predicted depth units (empty otherwise).
    """

    task: str
    target_id: int
    name: str
    mask: torch.Tensor  # (H, W) bool
    rule: str
    edges: tuple[float, ...] = ()

    @property
    def n_pixels(self) -> int:
        return int(self.mask.sum())


#: how the depth scalar's relative error is floored (D29): ``absolute`` = max(|d0|, 1e-6) (D17, the authors');
#: ``range`` = max(|d0|, 1 % of the clean prediction's range over the image)
DEPTH_FLOORS: tuple[str, ...] = ("absolute", "range")


@dataclass(frozen=True)
class ScoreOptions:
    """Options of the task scalars that every faithfulness metric measures (recorded with every score)."""

    depth_floor: str = "absolute"

    def __post_init__(self) -> None:
        if self.depth_floor not in DEPTH_FLOORS:
            raise ValueError(f"unknown depth floor {self.depth_floor!r}; valid floors: {', '.join(DEPTH_FLOORS)}")


DEFAULT_SCORE_OPTIONS = ScoreOptions()

#: how the app draws a task's stored prediction (``Task.display_kind``): ``labels`` a class map (argmax, the
#: dataset's class names), ``scalar`` a one-channel heatmap, ``rgb`` a 3-channel field in [-1, 1] as colours
DISPLAY_KINDS: tuple[str, ...] = ("labels", "scalar", "rgb")


class MetricAccumulator(ABC):
    """Pools a task's metrics over every pixel of a split (decision D22)."""

    @abstractmethod
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch of predictions and ground truth."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """Metrics over everything added so far."""


class Task(ABC):
    """A task of a multi-task network."""

    name: ClassVar[str]
    #: metric name -> True when higher is better
    higher_is_better: ClassVar[dict[str, bool]]
    #: the metric reported first (summary tables, accuracy-vs-sparsity plots)
    primary_metric: ClassVar[str]
    #: stored labels the target is derived from (built-in task names); empty: the task's own stored label
    sources: ClassVar[tuple[str, ...]] = ()
    #: what the app calls the task (empty: the name, capitalised)
    display_name: ClassVar[str] = ""
    #: how the store keeps and the app draws the prediction (one of ``DISPLAY_KINDS``; ``stored_prediction``)
    display_kind: ClassVar[str] = "scalar"

    @property
    def title(self) -> str:
        """The task's name in the app (``display_name``, else the registered name capitalised)."""
        return self.display_name or self.name.replace("_", " ").capitalize()

    def stored_prediction(self, pred: torch.Tensor) -> np.ndarray:
        """One image's prediction ``(C, H, W)`` as the store keeps it and the app draws it (``display_kind``):
        ``labels`` the argmax ``(H, W)`` (uint8; int16 beyond 256 classes), ``scalar`` channel 0 ``(H, W)`` float16,
        ``rgb`` the first three channels ``(3, H, W)`` float16. A task whose raw output is not what a user should
        see (logits of a binary map, say) overrides this to apply its output activation."""
        p = pred.detach().cpu()
        if self.display_kind == "labels":
            return p.argmax(0).numpy().astype(np.uint8 if p.shape[0] <= 256 else np.int16)
        if self.display_kind == "scalar":
            return p[0].float().numpy().astype(np.float16)
        if self.display_kind == "rgb":
            return p[:3].float().numpy().astype(np.float16)
        raise ValueError(f"task {self.name!r} has display_kind {self.display_kind!r}; valid kinds: "
                         f"{', '.join(DISPLAY_KINDS)}")

    def describe(self) -> dict[str, str]:
        """What the app's read path needs of the task without importing it (the store's ``meta`` key ``tasks``)."""
        return {"label": self.title, "display": self.display_kind, "primary_metric": self.primary_metric}

    def derive_target(self, labels: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The target of one sample from its stored labels ``{source: tensor}`` (``segmentation`` ``(H, W)``
        long, ``depth`` ``(1, H, W)``, ``normals`` ``(3, H, W)``); only called for a task with ``sources``."""
        raise NotImplementedError(f"task {type(self).__name__} declares sources {self.sources} but does not override "
                                  "derive_target(labels) to compute its target from them")

    @property
    @abstractmethod
    def out_channels(self) -> int:
        """Channels of the model's prediction for this task."""

    @abstractmethod
    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar training loss of a batch (MTAN's losses)."""

    @abstractmethod
    def new_metric(self) -> MetricAccumulator:
        """A fresh accumulator of this task's metrics."""

    # --- explanations (decisions D12-D17); implemented by every concrete task --------------------------

    def explanation_targets(self, pred: torch.Tensor) -> list[ExplanationTarget]:
        """Targets of one image from its clean prediction ``(C, H, W)``; empty pixel sets are skipped."""
        raise NotImplementedError(f"{type(self).__name__} has no explanation targets")

    def gradcam_objective(self, pred: torch.Tensor, target: ExplanationTarget) -> torch.Tensor:
        """Differentiable scalar that Grad-CAM explains, from one image's prediction ``(C, H, W)``."""
        raise NotImplementedError(f"{type(self).__name__} has no Grad-CAM objective")

    def perturbation_score(self, pred: torch.Tensor, clean: torch.Tensor, masks: torch.Tensor,
                           target_ids: torch.Tensor, options: ScoreOptions = DEFAULT_SCORE_OPTIONS) -> torch.Tensor:
        """The task scalar that every faithfulness metric tracks, per row (D17, D28): ``pred``/``clean``
        ``(R, C, H, W)`` (perturbed and clean predictions), ``masks`` ``(R, H, W)`` bool (the target's pixel set,
        fixed from the clean prediction, D15), ``target_ids`` ``(R,)`` long -> ``(R,)``; NaN where a mask is
        empty. Each row depends on its own inputs only."""
        raise NotImplementedError(f"{type(self).__name__} has no perturbation score")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, out_channels={self.out_channels})"


def masked_mean(values: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` ``(R, H, W)`` over each row's ``masks`` ``(R, H, W)``; NaN for an empty mask."""
    m = masks.to(values.dtype)
    return (values * m).sum(dim=(-2, -1)) / m.sum(dim=(-2, -1))
