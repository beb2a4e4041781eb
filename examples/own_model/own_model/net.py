"""A two-task network of a family mtlx does not ship: torchvision's LR-ASPP on a MobileNetV3 backbone with one
LR-ASPP head per task (segmentation and depth), built without pretrained weights.

The backbone is torchvision's ``mobilenet_v3_large`` / ``mobilenet_v3_small`` (``dilated=True``, output stride 16,
as ``lraspp_mobilenet_v3_large`` builds it), split where LR-ASPP taps it: ``encoder_low`` ends at the stride-8
stage (the heads' low-level input), ``encoder_high`` runs to the last conv (stride 16). Each head is torchvision's
``LRASPPHead``; its prediction is upsampled to the input size. ``width`` scales the backbone's channels
(MobileNetV3's ``width_mult``) and ``inter_channels`` the heads', so a tiny version exists for tests.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small
from torchvision.models.segmentation.lraspp import LRASPPHead

TASKS: tuple[str, ...] = ("segmentation", "depth")
BACKBONES = {"large": mobilenet_v3_large, "small": mobilenet_v3_small}


class TwoTaskLRASPP(nn.Module):
    """``forward(x) -> {"segmentation": (B, classes, H, W) logits, "depth": (B, 1, H, W)}`` (the tasks given)."""

    def __init__(self, task_channels: Mapping[str, int], backbone: str = "large", width: float = 1.0,
                 inter_channels: int = 128) -> None:
        super().__init__()
        unknown = [t for t in task_channels if t not in TASKS]
        if unknown or not task_channels:
            raise ValueError(f"TwoTaskLRASPP has heads for {', '.join(TASKS)}; got tasks {list(task_channels)}")
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; valid: {', '.join(BACKBONES)}")
        features = BACKBONES[backbone](weights=None, width_mult=width, dilated=True).features
        # the strided stages, as torchvision's LR-ASPP finds them: low = output stride 8, high = the last conv
        stages = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)] + [len(features) - 1]
        low = stages[-4]
        self.encoder_low = nn.Sequential(*features[:low + 1])
        self.encoder_high = nn.Sequential(*features[low + 1:])
        low_channels = int(features[low].out_channels)
        high_channels = int(features[-1].out_channels)
        self.heads = nn.ModuleDict({t: LRASPPHead(low_channels, high_channels, int(c), inter_channels)
                                    for t, c in task_channels.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low = self.encoder_low(x)
        feats = {"low": low, "high": self.encoder_high(low)}
        return {t: F.interpolate(head(feats), size=x.shape[-2:], mode="bilinear", align_corners=False)
                for t, head in self.heads.items()}


def build(task_channels: Mapping[str, int], backbone: str = "large", width: float = 1.0,
          inter_channels: int = 128) -> TwoTaskLRASPP:
    """The factory mtlx calls: ``build(task_channels, **model_args)``."""
    return TwoTaskLRASPP(task_channels, backbone=backbone, width=width, inter_channels=inter_channels)
