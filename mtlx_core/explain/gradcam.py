"""Grad-CAM for every explanation target of a task, batched (decisions D11-D15).

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
ICCV 2017, https://arxiv.org/abs/1610.02391; dense targets as in SegGrad-CAM (Vinogradova et al., AAAI 2020,
https://arxiv.org/abs/2002.11434).

Public API::

    exps = explain(model, images, task)              # layer defaults to model.default_gradcam_layer
    e = exps[0]
    e.image_index, e.task, e.target_id, e.target_name, e.layer
    e.map_layer   # (h, w) float32 in [0, 1] at the layer's resolution
    e.map_input   # (H, W) float32 in [0, 1], bilinear-resized to the input (align_corners=False = cv2.INTER_LINEAR)
    e.is_zero     # the map has no spatial variation (all zero after ReLU): reported, never divided by zero

Map = ReLU(sum_k mean_uv(dy/dA_k) * A_k), min-max normalised per map (D11). The targets of one image come
from ``task.explanation_targets`` on its clean prediction unless given. All targets of all images of the
batch share ONE forward and ONE batched backward: target slot ``j`` sums the ``j``-th target of every image
(images are independent in eval mode, so image ``i``'s slice of the gradient is its own target's), and
``torch.autograd.grad(..., is_grads_batched=True)`` differentiates all slots at once. The hook on the layer
returns a detached leaf copy of its output, so the backward stops at the layer; it is removed in ``finally``.
That capture (``layer_gradients``) and the map post-processing (``explanations_from_cams``) are shared with the
other explainers (``mtlx_core.explain.explainers``: Grad-CAM++, HiResCAM, XGrad-CAM, LayerCAM, Score-CAM,
Integrated Gradients).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtlx_core.models.layers import registered_layers, resolve_layer_name
from mtlx_core.tasks.base import ExplanationTarget, Task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GradCamSettings:
    """What makes a Grad-CAM map reproducible; stored next to every map."""

    layer: str
    method: str = "gradcam"
    normalisation: str = "minmax"
    resize: str = "bilinear_align_corners_false"
    target_rule: str = ""  # e.g. the depth bin mode

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Explanation:
    """One Grad-CAM map of one (image, task, target)."""

    image_index: int
    task: str
    target: ExplanationTarget
    layer: str
    map_layer: np.ndarray  # (h, w) float32
    map_input: np.ndarray  # (H, W) float32
    is_zero: bool
    settings: GradCamSettings

    @property
    def target_id(self) -> int:
        return self.target.target_id

    @property
    def target_name(self) -> str:
        return self.target.name

    @property
    def saliency_method(self) -> str:
        return self.settings.method

    @property
    def saliency(self) -> np.ndarray:
        """The map IROF ranks segments by (the input-resolution map)."""
        return self.map_input


def resolve_layer(model: nn.Module, layer: str | None, task: str | None = None) -> tuple[str, nn.Module]:
    """The layer's module path and module: ``layer`` is a registered label (``mtlx_core.models.layers``), a
    module path, or ``None`` for ``model.default_gradcam_layer``; per-task layers need ``task``."""
    name = resolve_layer_name(model, layer, task)
    try:
        return name, model.get_submodule(name)
    except AttributeError:
        valid = ", ".join(registered_layers(model))
        raise ValueError(f"model has no layer {name!r}; registered layers: {valid or 'none'}") from None


def _forward_with_leaf(model: nn.Module, module: nn.Module, images: torch.Tensor,
                       task: str, track_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward pass whose ``module`` output is replaced by a leaf tensor requiring grad (``track_grad=False``:
    a plain detached copy and no graph, for explainers that only need the layer's activations)."""
    captured: list[torch.Tensor] = []

    def hook(_mod: nn.Module, _inp: object, out: object) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"Grad-CAM layer must output a tensor, got {type(out).__name__}")
        leaf = out.detach().requires_grad_(track_grad)
        captured.append(leaf)
        return leaf

    handle = module.register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(track_grad):
            out = model(images)[task]
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ValueError(f"Grad-CAM layer ran {len(captured)} times in one forward; pick a layer used once")
    return out, captured[0]


@dataclass(frozen=True, eq=False)
class LayerGradients:
    """One forward and one batched backward of every target of a task (shared by the gradient CAMs)."""

    acts: torch.Tensor  # (B, K, h, w) the layer's activations, detached
    grads: torch.Tensor  # (S, B, K, h, w) slot j = d(j-th target of each image)/d acts
    targets: list[list[ExplanationTarget]]  # per image; target j of image i uses slot j


def resolve_targets(task: Task, out: torch.Tensor, targets: Sequence[Sequence[ExplanationTarget]] | None
                    ) -> list[list[ExplanationTarget]]:
    """The targets per image: given, or ``task.explanation_targets`` of each clean prediction in ``out``."""
    if targets is None:
        targets = [task.explanation_targets(out[i].detach()) for i in range(out.shape[0])]
    if len(targets) != out.shape[0]:
        raise ValueError(f"targets given for {len(targets)} images, batch has {out.shape[0]}")
    return [list(t) for t in targets]


def layer_gradients(model: nn.Module, images: torch.Tensor, task: Task, layer: str | None = None,
                    targets: Sequence[Sequence[ExplanationTarget]] | None = None) -> LayerGradients:
    """The layer's activations and their gradients for every target of ``task`` (one forward, one batched
    backward); targets from ``task.explanation_targets`` on the clean prediction unless given."""
    _, module = resolve_layer(model, layer, task.name)
    model.eval()
    out, acts = _forward_with_leaf(model, module, images, task.name)
    try:
        listed = resolve_targets(task, out, targets)
        n_slots = max((len(t) for t in listed), default=0)
        if n_slots == 0:
            return LayerGradients(acts.detach(), acts.new_zeros((0, *acts.shape)), listed)
        with torch.enable_grad():
            slots = []
            for j in range(n_slots):
                terms = [task.gradcam_objective(out[i], t[j]) for i, t in enumerate(listed) if j < len(t)]
                slots.append(torch.stack(terms).sum())
            y = torch.stack(slots)
            grads = torch.autograd.grad(y, acts, grad_outputs=torch.eye(n_slots, dtype=y.dtype, device=y.device),
                                        is_grads_batched=True, allow_unused=True)[0]
        if grads is None:  # no target depends on the layer
            grads = torch.zeros((n_slots, *acts.shape), dtype=acts.dtype, device=acts.device)
        return LayerGradients(acts.detach(), grads, listed)
    finally:
        del out, acts


def gradcam_combine(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM maps ``(S, B, h, w)`` before ReLU: ``sum_k mean_uv(grads_k) * acts_k``."""
    weights = grads.mean(dim=(-2, -1))  # (slots, B, K)
    return torch.einsum("sbk,bkhw->sbhw", weights, acts)


def per_image(cams: torch.Tensor, targets: list[list[ExplanationTarget]]) -> list[list[torch.Tensor]]:
    """Slot-major maps ``(S, B, h, w)`` as one list of ``(h, w)`` maps per image, one per target."""
    return [[cams[j, i] for j in range(len(t))] for i, t in enumerate(targets)]


def gradcam_maps(model: nn.Module, images: torch.Tensor, task: Task, layer: str | None = None,
                 targets: Sequence[Sequence[ExplanationTarget]] | None = None,
                 ) -> tuple[list[list[torch.Tensor]], list[list[ExplanationTarget]]]:
    """Raw (un-normalised) Grad-CAM maps ``(h, w)`` per image and target, and the targets used."""
    lg = layer_gradients(model, images, task, layer, targets)
    cams = torch.relu(gradcam_combine(lg.acts, lg.grads))
    return per_image(cams, lg.targets), lg.targets


def normalise_minmax(cam: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(cam - min) / (max - min)``; a map without variation is returned as zeros with ``is_zero=True``."""
    lo, hi = cam.min(), cam.max()
    if not bool(hi > lo):
        return torch.zeros_like(cam), True
    return (cam - lo) / (hi - lo), False


def explain(model: nn.Module, images: torch.Tensor, task: Task, layer: str | None = None,
            targets: Sequence[Sequence[ExplanationTarget]] | None = None) -> list[Explanation]:
    """Grad-CAM maps of every target of ``task`` for a batch ``(B, 3, H, W)``; ordered by image, then target."""
    check_images(images)
    name, _ = resolve_layer(model, layer, task.name)
    settings = GradCamSettings(layer=name, target_rule=str(getattr(task, "bins", "")))
    cams, used = gradcam_maps(model, images, task, name, targets)
    return explanations_from_cams(cams, used, task, name, settings, tuple(images.shape[-2:]))


def check_images(images: torch.Tensor) -> None:
    """A clear error for a batch that is not ``(B, 3, H, W)``."""
    if images.dim() != 4:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")


def explanations_from_cams(cams: Sequence[Sequence[torch.Tensor]], used: Sequence[Sequence[ExplanationTarget]],
                           task: Task, layer: str, settings: GradCamSettings, size: tuple[int, ...]
                           ) -> list[Explanation]:
    """Explanations from raw non-negative maps per image and target: each map min-max normalised at its own
    resolution (``map_layer``), then bilinear-resized to ``size`` (``map_input``); ordered by image, then target."""
    results: list[Explanation] = []
    for i, (cams_i, targets_i) in enumerate(zip(cams, used, strict=True)):
        if not cams_i:
            continue
        normed = [normalise_minmax(c.float()) for c in cams_i]
        layer_maps = torch.stack([m for m, _ in normed])
        input_maps = F.interpolate(layer_maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        for t, (m, zero), up in zip(targets_i, normed, input_maps, strict=True):
            results.append(Explanation(
                image_index=i, task=task.name, target=t, layer=layer,
                map_layer=m.cpu().numpy().astype(np.float32), map_input=up.cpu().numpy().astype(np.float32),
                is_zero=zero, settings=settings))
    n_zero = sum(e.is_zero for e in results)
    if n_zero:
        logger.info("%d of %d %s %s maps are all zero", n_zero, len(results), task.name, settings.method)
    return results
