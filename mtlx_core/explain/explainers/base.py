"""What every explainer shares: its recorded settings, the interface, and the gradient-CAM driver.

A gradient CAM is a function of the layer's activations ``A`` ``(B, K, h, w)`` and their gradients ``G``
``(S, B, K, h, w)`` (slot ``j`` = the ``j``-th target of every image), both from ONE forward and ONE batched
backward over all targets of a task (``mtlx_core.explain.gradcam.layer_gradients``); each variant only says how
it combines them (:meth:`GradientCam.combine`). Every map is then post-processed as Grad-CAM's (D11): ReLU,
min-max normalised at the layer's resolution (``map_layer``), bilinear-resized to the input (``map_input``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import ClassVar

import torch
from torch import nn

from mtlx_core.explain.gradcam import (
    Explanation,
    GradCamSettings,
    LayerGradients,
    check_images,
    explanations_from_cams,
    layer_gradients,
    per_image,
    resolve_layer,
)
from mtlx_core.tasks.base import ExplanationTarget, Task

Param = str | int | float
Targets = Sequence[Sequence[ExplanationTarget]] | None


@dataclass(frozen=True)
class ExplainerSettings(GradCamSettings):
    """Grad-CAM's settings (``method`` = the explainer's name) plus the explainer's own parameters (K, baseline,
    steps...); ``to_dict`` flattens them into one record."""

    params: tuple[tuple[str, Param], ...] = ()

    def __post_init__(self) -> None:
        clash = sorted({k for k, _ in self.params} & {f.name for f in fields(GradCamSettings)})
        if clash:
            raise ValueError(f"explainer option(s) {', '.join(clash)} clash with the recorded settings' names")

    def to_dict(self) -> dict[str, object]:
        record = asdict(self)
        params = dict(record.pop("params"))
        return {**record, **params}


class Explainer(ABC):
    """One explanation method; concrete explainers are frozen dataclasses whose fields are their options."""

    name: ClassVar[str]

    @abstractmethod
    def explain(self, model: nn.Module, images: torch.Tensor, task: Task, layer: str | None = None,
                targets: Targets = None) -> list[Explanation]:
        """Maps of every target of ``task`` for a batch ``(B, 3, H, W)``; ordered by image, then target (targets
        from ``task.explanation_targets`` on the clean prediction unless given)."""

    def params(self) -> dict[str, Param]:
        """The explainer's options, recorded with every map."""
        return {f.name: getattr(self, f.name) for f in fields(self)} if is_dataclass(self) else {}

    def settings(self, layer: str, task: Task, **extra: Param) -> GradCamSettings:
        return ExplainerSettings(layer=layer, method=self.name, target_rule=str(getattr(task, "bins", "")),
                                 params=tuple({**self.params(), **extra}.items()))


class GradientCam(Explainer):
    """A CAM computed from the layer's activations and their gradients (one forward, one batched backward)."""

    @abstractmethod
    def combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """Maps ``(S, B, h, w)`` before ReLU from ``acts`` ``(B, K, h, w)`` and ``grads`` ``(S, B, K, h, w)``."""

    def explain(self, model: nn.Module, images: torch.Tensor, task: Task, layer: str | None = None,
                targets: Targets = None) -> list[Explanation]:
        check_images(images)
        name, _ = resolve_layer(model, layer, task.name)
        return self.from_gradients(layer_gradients(model, images, task, name, targets), task, name,
                                   tuple(images.shape[-2:]))

    def from_gradients(self, lg: LayerGradients, task: Task, layer: str, size: tuple[int, ...]
                       ) -> list[Explanation]:
        """Explanations from a capture (shared by every gradient CAM explaining the same task and layer)."""
        cams = torch.relu(self.combine(lg.acts, lg.grads))
        return explanations_from_cams(per_image(cams, lg.targets), lg.targets, task, layer,
                                      self.settings(layer, task), size)


def spatial_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over the last two (spatial) axes, kept as size-1 axes for broadcasting."""
    return t.sum(dim=(-2, -1), keepdim=True)


def explain_all(explainers: Sequence[Explainer], model: nn.Module, images: torch.Tensor, task: Task,
                layer: str | None = None, targets: Targets = None) -> dict[str, list[Explanation]]:
    """Every explainer's maps of the same targets, by explainer name; the gradient CAMs share one forward and one
    batched backward, and the targets of that capture are given to the other explainers."""
    check_images(images)
    out: dict[str, list[Explanation]] = {}
    grad_cams = [e for e in explainers if isinstance(e, GradientCam)]
    if grad_cams:
        name, _ = resolve_layer(model, layer, task.name)
        lg = layer_gradients(model, images, task, name, targets)
        targets = lg.targets
        for cam in grad_cams:
            out[cam.name] = cam.from_gradients(lg, task, name, tuple(images.shape[-2:]))
    for e in explainers:
        if e.name not in out:
            out[e.name] = e.explain(model, images, task, layer, targets)
    return {e.name: out[e.name] for e in explainers}
