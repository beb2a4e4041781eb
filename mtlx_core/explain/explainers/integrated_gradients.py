"""Integrated Gradients (Sundararajan et al., ICML 2017, https://arxiv.org/abs/1703.01365) on the input, via
Captum's ``IntegratedGradients``, for the same scalar targets as the CAMs (``task.gradcam_objective``).

Settings (recorded): ``baseline`` (a constant image; 0 = black), ``n_steps``, ``approximation`` (Captum's
``method``: how the path integral is approximated, ``gausslegendre`` by default) and ``internal_batch_size``
(rows per forward; at least the image's number of targets). Batched over targets: one Captum call per image,
whose examples are the image repeated once per target, each row scoring its own target. Post-processing as the
CAMs' (D11): the attribution is summed over the input channels, its positive part kept (ReLU) and min-max
normalised; the map is at the input's resolution, so ``map_layer`` equals ``map_input``
and the layer is recorded as ``input``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from mtlx_core.explain.explainers.base import Explainer, Targets
from mtlx_core.explain.gradcam import Explanation, check_images, explanations_from_cams, resolve_targets
from mtlx_core.tasks.base import ExplanationTarget, Task

INPUT_LAYER = "input"
APPROXIMATIONS = ("gausslegendre", "riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid")


def target_scalars(model: nn.Module, task: Task, targets: list[ExplanationTarget]
                   ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Captum's forward function: rows ``x`` ``(N, 3, H, W)`` and ``rows`` ``(N,)`` (an index into
    ``targets``) -> ``(N,)`` each row's target scalar."""

    def forward(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        pred = model(x)[task.name]
        return torch.stack([task.gradcam_objective(pred[n], targets[int(r)]) for n, r in enumerate(rows)])

    return forward


@dataclass(frozen=True)
class IntegratedGradients(Explainer):
    name: ClassVar[str] = "integrated_gradients"
    baseline: float = 0.0
    n_steps: int = 32
    approximation: str = "gausslegendre"
    internal_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.n_steps < 1 or self.internal_batch_size < 1:
            raise ValueError(f"Integrated Gradients needs n_steps >= 1 and internal_batch_size >= 1, got "
                             f"n_steps={self.n_steps}, internal_batch_size={self.internal_batch_size}")
        if self.approximation not in APPROXIMATIONS:
            raise ValueError(f"unknown Integrated Gradients approximation {self.approximation!r}; valid "
                             f"approximations: {', '.join(APPROXIMATIONS)}")

    def explain(self, model: nn.Module, images: torch.Tensor, task: Task, layer: str | None = None,
                targets: Targets = None) -> list[Explanation]:
        """Maps of every target; ``layer`` is ignored (the attribution is on the input)."""
        from captum.attr import IntegratedGradients as CaptumIG  # type: ignore[import-untyped]

        check_images(images)
        model.eval()
        out = images  # only its batch size is read when the targets are given
        if targets is None:
            with torch.no_grad():
                out = model(images)[task.name]
        listed = resolve_targets(task, out, targets)
        cams: list[list[torch.Tensor]] = []
        for image, targets_i in zip(images, listed, strict=True):
            if not targets_i:
                cams.append([])
                continue
            n = len(targets_i)
            ig = CaptumIG(target_scalars(model, task, targets_i))
            rows = torch.arange(n, device=images.device)
            attr = ig.attribute(image[None].expand(n, -1, -1, -1), baselines=self.baseline,
                                additional_forward_args=(rows,), n_steps=self.n_steps, method=self.approximation,
                                internal_batch_size=max(self.internal_batch_size, n))
            cams.append(list(torch.relu(attr.detach().sum(dim=1))))
        return explanations_from_cams(cams, listed, task, INPUT_LAYER, self.settings(INPUT_LAYER, task),
                                      tuple(images.shape[-2:]))
