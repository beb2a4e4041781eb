"""DeepLab-ResNet-34 multi-task network as used by DiSparse (decision D5, algorithms 2.1).

DiSparse: Sun et al., "DiSparse: Disentangled Sparsification for Multitask Model Compression", CVPR 2022,
https://arxiv.org/abs/2206.04662 (model ``SceneNet`` of SHI-Labs/DiSparse-Multitask-Model-Compression, derived
from AdaShare); ASPP heads from DeepLab-v2, https://arxiv.org/abs/1606.00915. Re-implemented here.

- Backbone (ResNet-34 layout, widths ``[64, 128, 256, 512] * width``): stem Conv7x7 s2 (no bias) + BN + ReLU +
  MaxPool3x3 s2 p1 (ceil_mode); BasicBlocks ``[3, 4, 6, 3]`` with stage strides ``[1, 2, 1, 1]`` and dilations
  ``[1, 1, 2, 4]`` (3x3 convs padded by their dilation), so the backbone output has stride 8. With the ceil-mode
  pool the grid is ``(H - 1) // 8 + 1`` for ``H = 8k + 1`` (reference 321 crops -> 41) and ``H / 8 + 1`` for
  ``H = 8k`` (NYUv2 288x384 -> 37x49, Cityscapes 128x256 -> 17x33). The first block of a
  stage has a 1x1 conv + BN shortcut when the stride, the width or the dilation (2 or 4) changes. Block:
  ``out_relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.
- Heads: per task, four ASPP branches summed (rates 6, 12, 18, 24); each is Conv3x3(dilation = padding = rate,
  512 * width -> hidden) -> ReLU -> Dropout(0.5) -> Conv1x1(hidden -> hidden) -> ReLU -> Dropout(0.5) ->
  Conv1x1(hidden -> C), ``hidden = 1024 * width`` unless ``head_hidden`` is given. The 1/8-resolution sum is
  upsampled bilinearly (align_corners=False) to the input size (D5, LibMTL style), then normals are L2-normalised.
- Initialisation as the reference: backbone convs N(0, 0.01) and BN gamma 1 / beta 0; the ASPP convs keep
  PyTorch's default initialisation, because the reference's init loop only runs over the backbone.

Full-width parameter count: backbone 21,284,672 (torchvision's ResNet-34 without ``fc``); ASPP heads
4 * (4,718,592 + 1,024 + 1,048,576 + 1,024 + 1,025 * C) per task: NYUv2 (13 classes + depth + normals)
90,584,964 in all, Cityscapes (7 classes + depth) 67,471,200.

Differences from the reference: outputs upsampled to the input size (the reference predicts at 1/8 and
nearest-downsamples the ground truth), normals normalised, task-named modules (``heads.<task>.<branch>``
instead of ``task<k>_fc1_c<branch>``), the shortcut is part of its block (``blocks.<s>.0.downsample``
instead of ``backbone.ds``), a width multiplier and ``head_hidden``; ReLUs are not in-place.
The forward never uses the channel list, so structurally pruned copies run unchanged; a pruner must keep
every residual sum consistent (a stage's block outputs and its shortcut share their channels).

Default Grad-CAM layer (D11, what the authors used): ``backbone.blocks.3.2.conv2``, the second conv of the last
residual block (pre-BN, pre-residual; the stride-8 grid above).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from mtlx_core.models.base import MultiTaskModel, finish_prediction, scale_channels

logger = logging.getLogger(__name__)

WIDTHS: tuple[int, ...] = (64, 128, 256, 512)
BLOCKS: tuple[int, ...] = (3, 4, 6, 3)
STRIDES: tuple[int, ...] = (1, 2, 1, 1)
DILATIONS: tuple[int, ...] = (1, 1, 2, 4)
ASPP_RATES: tuple[int, ...] = (6, 12, 18, 24)
HEAD_HIDDEN = 1024


class BasicBlock(nn.Module):
    """ResNet basic block with dilation; the shortcut (if any) is ``downsample``."""

    def __init__(self, cin: int, cout: int, stride: int, dilation: int, downsample: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
                           if downsample else None)
        self.out_relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.out_relu(out + shortcut)


class Backbone(nn.Module):
    """Dilated ResNet-34 trunk, output stride 8."""

    def __init__(self, width: float) -> None:
        super().__init__()
        widths = [scale_channels(c, width) for c in WIDTHS]
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        stages = []
        cin = widths[0]
        for cout, n, stride, dil in zip(widths, BLOCKS, STRIDES, DILATIONS, strict=True):
            needs_ds = stride != 1 or cin != cout or dil in (2, 4)
            blocks = [BasicBlock(cin, cout, stride, dil, needs_ds)]
            blocks += [BasicBlock(cout, cout, 1, dil, False) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.blocks = nn.ModuleList(stages)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.blocks:
            x = stage(x)
        return x


class ASPPBranch(nn.Module):
    """One DeepLab-v2 classification branch with atrous rate ``rate``."""

    def __init__(self, cin: int, hidden: int, cout: int, rate: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, hidden, 3, padding=rate, dilation=rate)
        self.relu1 = nn.ReLU()
        self.drop1 = nn.Dropout(0.5)
        self.conv2 = nn.Conv2d(hidden, hidden, 1)
        self.relu2 = nn.ReLU()
        self.drop2 = nn.Dropout(0.5)
        self.conv3 = nn.Conv2d(hidden, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.relu1(self.conv1(x)))
        x = self.drop2(self.relu2(self.conv2(x)))
        return self.conv3(x)


class DeepLabResNet34(MultiTaskModel):
    """DeepLab-ResNet-34 with per-task ASPP heads; see the module docstring."""

    arch_name = "deeplab_resnet34"
    #: Grad-CAM layers (``mtlx_core.models.layers``), D11's first; all at output stride 8 ([8 x 12] at 64 x 96)
    gradcam_layers: ClassVar[dict[str, str]] = {
        "d11_conv2": "backbone.blocks.3.2.conv2",  # second conv of the last residual block, pre-BN (D11)
        "block_out": "backbone.blocks.3.2",  # the same block's output: after the residual sum and its ReLU
        "stage3_out": "backbone.blocks.2",  # output of the third residual stage
    }

    def __init__(self, task_channels: Mapping[str, int], width: float = 1.0, head_hidden: int | None = None) -> None:
        if head_hidden is not None and (isinstance(head_hidden, bool) or not isinstance(head_hidden, int)
                                        or head_hidden < 1):
            raise ValueError(f"head_hidden must be a positive int or None, got {head_hidden!r}")
        super().__init__(task_channels, width, **({} if head_hidden is None else {"head_hidden": head_hidden}))
        hidden = scale_channels(HEAD_HIDDEN, width) if head_hidden is None else head_hidden
        self.backbone = Backbone(width)
        feat = scale_channels(WIDTHS[-1], width)
        self.heads = nn.ModuleDict({
            t: nn.ModuleList([ASPPBranch(feat, hidden, c, r) for r in ASPP_RATES])
            for t, c in self.task_channels.items()})
        self.default_gradcam_layer = f"backbone.blocks.3.{BLOCKS[-1] - 1}.conv2"

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predictions ``{task: (B, C, H, W)}`` at the input size (any H, W)."""
        if x.dim() != 4:
            raise ValueError(f"DeepLab-ResNet needs a (B, 3, H, W) input; got shape {tuple(x.shape)}")
        size = x.shape[-2:]
        feats = self.backbone(x)
        out: dict[str, torch.Tensor] = {}
        for t in self.task_names:
            branches = cast(nn.ModuleList, self.heads[t])  # ModuleDict items are typed as Module
            y = branches[0](feats)
            for branch in branches[1:]:
                y = y + branch(feats)
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out[t] = finish_prediction(t, y)
        return out
