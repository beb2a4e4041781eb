"""Score-CAM (Wang et al., CVPR-W 2020, https://arxiv.org/abs/1910.01279) on the K most active channels.

For each image: the K channels of the layer with the largest mean activation (``k``, default 32; all channels
when the layer has fewer) are each upsampled to the input (bilinear, ``align_corners=True``, as
pytorch-grad-cam's ``ScoreCAM``), min-max normalised to ``[0, 1]`` (``(a - min) / (max - min + 1e-8)``) and
multiplied into the image; every target's scalar (``task.gradcam_objective``) on each masked image gives its
score, ``w = softmax_k(score)`` per target and ``map = ReLU(sum_k w_k A_k)``. Batched over channels and
targets: an image's K masked copies are forwarded once (``batch_size`` rows per forward, all images together)
and every target of the image is scored on the same outputs. Recorded: ``k``, ``channels_masked``
(``min(k, K_layer)``), ``batch_size``, ``mask_upsample``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mtlx_core.explain.explainers.base import Explainer, Targets
from mtlx_core.explain.gradcam import (
    Explanation,
    _forward_with_leaf,
    check_images,
    explanations_from_cams,
    resolve_layer,
    resolve_targets,
)
from mtlx_core.tasks.base import ExplanationTarget, Task

MASK_EPS = 1e-8


def top_channels(acts: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(B, min(k, K))`` of each image's channels with the largest mean activation."""
    return acts.mean(dim=(-2, -1)).topk(min(k, acts.shape[1]), dim=1).indices


def channel_masks(acts: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Activations ``(B, K, h, w)`` upsampled to ``size`` and min-max normalised per channel: ``(B, K, H, W)``."""
    up = F.interpolate(acts, size=size, mode="bilinear", align_corners=True)
    lo = up.amin(dim=(-2, -1), keepdim=True)
    hi = up.amax(dim=(-2, -1), keepdim=True)
    return (up - lo) / (hi - lo + MASK_EPS)


@dataclass(frozen=True)
class ScoreCam(Explainer):
    name: ClassVar[str] = "scorecam"
    k: int = 32
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.k < 1 or self.batch_size < 1:
            raise ValueError(f"Score-CAM needs k >= 1 and batch_size >= 1, got k={self.k}, "
                             f"batch_size={self.batch_size}")

    def explain(self, model: nn.Module, images: torch.Tensor, task: Task, layer: str | None = None,
                targets: Targets = None) -> list[Explanation]:
        check_images(images)
        name, module = resolve_layer(model, layer, task.name)
        model.eval()
        out, acts = _forward_with_leaf(model, module, images, task.name, track_grad=False)
        listed = resolve_targets(task, out, targets)
        idx = top_channels(acts, self.k)  # (B, k)
        sel = acts.gather(1, idx[:, :, None, None].expand(-1, -1, *acts.shape[-2:]))
        scores = self._scores(model, images, task, listed, channel_masks(sel, tuple(images.shape[-2:])))
        cams = [list(torch.relu(torch.einsum("tk,khw->thw", torch.softmax(s, dim=-1), sel[i])))
                if len(listed[i]) else [] for i, s in enumerate(scores)]
        settings = self.settings(name, task, channels_masked=int(idx.shape[1]),
                                 mask_upsample="bilinear_align_corners_true")
        return explanations_from_cams(cams, listed, task, name, settings, tuple(images.shape[-2:]))

    def _scores(self, model: nn.Module, images: torch.Tensor, task: Task, listed: list[list[ExplanationTarget]],
                masks: torch.Tensor) -> list[torch.Tensor]:
        """Per image ``(T_i, k)``: each target's scalar on each masked copy of the image."""
        b, k = masks.shape[:2]
        rows = [(i, c) for i in range(b) if listed[i] for c in range(k)]
        scores = [images.new_zeros((len(listed[i]), k)) for i in range(b)]
        with torch.no_grad():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start:start + self.batch_size]
                ii = torch.tensor([i for i, _ in chunk], device=images.device)
                cc = torch.tensor([c for _, c in chunk], device=images.device)
                pred = model(images[ii] * masks[ii, cc][:, None])[task.name]
                for r, (i, c) in enumerate(chunk):
                    for j, t in enumerate(listed[i]):
                        scores[i][j, c] = task.gradcam_objective(pred[r], t)
        return scores
