"""SegNet-MTAN: the Multi-Task Attention Network of Liu et al., CVPR 2019 (decision D4).

Paper: "End-to-End Multi-Task Learning with Attention", https://arxiv.org/abs/1803.10704; the layout follows
the authors' ``im2im_pred/model_segnet_mtan.py`` (lorenmt/mtan), re-implemented here.

Layout (``f = [64, 128, 256, 512, 512] * width``, each rounded, at least 1; ``CBR`` = Conv3x3(bias) + BN + ReLU):

- shared VGG-16 encoder: stage ``j`` = ``encoder_block[j]`` (one CBR, in -> f[j]) then ``conv_block_enc[j]``
  (1, 1, 2, 2, 2 CBRs at f[j]), then 2x2 max-pool with indices; input H, W must be divisible by 32;
- shared decoder: stage ``k = 4..0`` = max-unpool with encoder stage k's indices, ``decoder_block[k]``
  (f[k] -> f[k-1], f[0] -> f[0] at k = 0) and ``conv_block_dec[k]`` (1, 1, 2, 2, 2 CBRs);
- per task, attention modules ``1x1 conv-BN-ReLU-1x1 conv-BN-sigmoid``: ``encoder_att[task][j]`` reads
  ``encoder_block[j]``'s output (concatenated, for j >= 1, with the previous attended feature), its mask
  multiplies ``conv_block_enc[j]``'s output, then the shared ``encoder_block_att[j]`` CBR and a 2x2 max-pool;
  ``decoder_att[task][k]`` reads ``cat(unpooled decoder input, decoder_block_att[k](bilinear x2 of the
  previous attended feature))`` and masks ``conv_block_dec[k]``'s output;
- heads ``heads[task]`` = Conv3x3(f0 -> f0) + Conv1x1(f0 -> C), no BN/ReLU.

Initialisation as the reference: Xavier-normal conv weights, zero conv bias, BN gamma 1 / beta 0.

Parameter count at width 1 (hand formula in ``tests/test_models.py``):

- shared trunk (encoder, decoder, ``encoder_block_att``, ``decoder_block_att``): 35,163,456
- attention modules per task: 2,984,576
- NYUv2 (segmentation 13 classes, depth, normals): **44,229,073** (heads 111,889)
- Cityscapes (segmentation 7 classes, depth): **41,206,984** (heads 74,376)

Differences from the reference implementation:

- no ``logsigma`` parameter (uncertainty weighting is not used; loss weighting lives in
  ``mtlx_core.weighting``), so NYUv2 has 3 parameters fewer than the reference's 44,229,076;
- segmentation returns raw logits (the reference returns ``log_softmax``; the loss applies it, D4), so
  Grad-CAM targets differentiate logits;
- normals are divided by ``max(||n||, 1e-12)`` instead of ``||n||`` (no NaN on an all-zero vector);
- tasks are named and any non-empty subset is allowed (the reference hard-codes 3 tasks and 13 classes);
- a width multiplier; ReLUs are not in-place so that any layer can be hooked by Grad-CAM safely;
- the forward never uses the channel list: channel counts flow from the weights, so a structurally pruned
  copy (``mtlx_core.models.surgery.resize_to_state_dict``) runs unchanged. Channel couplings a pruner must
  respect: encoder stage k's output <-> its pooling indices <-> the decoder tensor unpooled with them
  (``decoder_block[k]``'s input, the first part of ``decoder_att[*][k]``'s input, and ``conv_block_dec[k+1]``'s
  output); attention masks <-> the features they multiply; the two parts of every concatenation.

Default Grad-CAM layer (D11, algorithms 9.8): ``conv_block_enc.4``, the deepest shared encoder stage
(post-ReLU, before pooling; 1/16 of the input resolution, 512 * width channels).
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

FILTERS: tuple[int, ...] = (64, 128, 256, 512, 512)
#: CBRs in conv_block_enc[j] / conv_block_dec[j]
STAGE_DEPTH: tuple[int, ...] = (1, 1, 2, 2, 2)
DIVISOR = 32


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """Conv3x3 (padding 1, bias) -> BatchNorm -> ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


def conv_stack(channels: int, depth: int) -> nn.Sequential:
    """``depth`` CBRs at constant width."""
    return nn.Sequential(*[conv_bn_relu(channels, channels) for _ in range(depth)])


def attention(cin: int, hidden: int, cout: int) -> nn.Sequential:
    """MTAN soft attention mask: 1x1 conv-BN-ReLU-1x1 conv-BN-sigmoid."""
    return nn.Sequential(
        nn.Conv2d(cin, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(),
        nn.Conv2d(hidden, cout, 1), nn.BatchNorm2d(cout), nn.Sigmoid(),
    )


class SegNetMTAN(MultiTaskModel):
    """SegNet-MTAN for any non-empty subset of segmentation / depth / normals; see the module docstring."""

    arch_name = "segnet_mtan"
    #: Grad-CAM layers (``mtlx_core.models.layers``), D11's first; resolution at a 64 x 96 input in brackets
    gradcam_layers: ClassVar[dict[str, str]] = {
        "enc_bottleneck": "conv_block_enc.4",  # deepest shared encoder stage (D11) [4 x 6]
        "dec_stage3": "conv_block_dec.3",  # shared decoder stages [8 x 12] ...
        "dec_stage2": "conv_block_dec.2",  # [16 x 24]
        "dec_stage1": "conv_block_dec.1",  # [32 x 48]
        "dec_stage0": "conv_block_dec.0",  # [64 x 96]
        "task_att_dec2": "decoder_att.{task}.2",  # the task's attention mask at decoder stage 2 [16 x 24]
        "task_att_dec1": "decoder_att.{task}.1",  # [32 x 48]
        "task_att_dec0": "decoder_att.{task}.0",  # [64 x 96]
        "head_conv": "heads.{task}.0",  # the task head's 3x3 conv, the last before its 1x1 output [64 x 96]
    }

    def __init__(self, task_channels: Mapping[str, int], width: float = 1.0) -> None:
        super().__init__(task_channels, width)
        f = [scale_channels(c, width) for c in FILTERS]
        self.filters = tuple(f)
        self.encoder_block = nn.ModuleList(
            [conv_bn_relu(3, f[0])] + [conv_bn_relu(f[j - 1], f[j]) for j in range(1, 5)])
        self.conv_block_enc = nn.ModuleList([conv_stack(f[j], STAGE_DEPTH[j]) for j in range(5)])
        # decoder stage k maps f[k] -> f[k-1] (f[0] -> f[0] at k = 0) and keeps that width
        dec_out = [f[0]] + [f[k - 1] for k in range(1, 5)]
        self.decoder_block = nn.ModuleList([conv_bn_relu(f[k], dec_out[k]) for k in range(5)])
        self.conv_block_dec = nn.ModuleList([conv_stack(dec_out[k], STAGE_DEPTH[k]) for k in range(5)])
        # shared convs of the attention path; the deepest ones keep the width (f[4] -> f[4])
        self.encoder_block_att = nn.ModuleList(
            [conv_bn_relu(f[j], f[min(j + 1, 4)]) for j in range(5)])
        self.decoder_block_att = nn.ModuleList(
            [conv_bn_relu(f[0], f[0])] + [conv_bn_relu(f[k], f[k] if k == 4 else f[k - 1]) for k in range(1, 5)])
        self.encoder_att = nn.ModuleDict({
            t: nn.ModuleList([attention(f[0], f[0], f[0])]
                             + [attention(2 * f[j], f[j], f[j]) for j in range(1, 5)])
            for t in self.task_names})
        # input of decoder_att[k]: unpooled tensor (f[k]) + decoder_block_att[k] output
        att_in = [2 * f[0]] + [f[k] + (f[k] if k == 4 else f[k - 1]) for k in range(1, 5)]
        self.decoder_att = nn.ModuleDict({
            t: nn.ModuleList([attention(att_in[k], dec_out[k], dec_out[k]) for k in range(5)])
            for t in self.task_names})
        self.heads = nn.ModuleDict({
            t: nn.Sequential(nn.Conv2d(f[0], f[0], 3, padding=1), nn.Conv2d(f[0], c, 1))
            for t, c in self.task_channels.items()})
        self.default_gradcam_layer = "conv_block_enc.4"
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predictions ``{task: (B, C, H, W)}``; H and W must be divisible by 32."""
        h, w = x.shape[-2:]
        if x.dim() != 4 or h % DIVISOR or w % DIVISOR:
            raise ValueError(f"SegNet-MTAN needs a (B, 3, H, W) input with H and W divisible by {DIVISOR} "
                             f"(five 2x2 poolings); got shape {tuple(x.shape)}")
        enc_first: list[torch.Tensor] = []  # encoder_block[j] outputs
        enc_out: list[torch.Tensor] = []  # conv_block_enc[j] outputs (pre-pool)
        indices: list[torch.Tensor] = []
        g = x
        for j in range(5):
            first = self.encoder_block[j](g)
            out = self.conv_block_enc[j](first)
            g, idx = F.max_pool2d(out, 2, 2, return_indices=True)
            enc_first.append(first)
            enc_out.append(out)
            indices.append(idx)
        unpooled: list[torch.Tensor] = []  # indexed by decoder step s = 4 - k
        dec_out: list[torch.Tensor] = []
        for k in range(4, -1, -1):
            up = F.max_unpool2d(g, indices[k], (2, 2), (2, 2), output_size=enc_out[k].shape[-2:])
            g = self.conv_block_dec[k](self.decoder_block[k](up))
            unpooled.append(up)
            dec_out.append(g)
        return {t: self._task_branch(t, enc_first, enc_out, unpooled, dec_out) for t in self.task_names}

    def _task_branch(self, task: str, enc_first: list[torch.Tensor], enc_out: list[torch.Tensor],
                     unpooled: list[torch.Tensor], dec_out: list[torch.Tensor]) -> torch.Tensor:
        enc_att = cast(nn.ModuleList, self.encoder_att[task])  # ModuleDict items are typed as Module
        mask = enc_att[0](enc_first[0])
        a = F.max_pool2d(self.encoder_block_att[0](mask * enc_out[0]), 2, 2)  # attended feature, pooled
        for j in range(1, 5):
            mask = enc_att[j](torch.cat((enc_first[j], a), dim=1))
            a = F.max_pool2d(self.encoder_block_att[j](mask * enc_out[j]), 2, 2)
        dec_att = cast(nn.ModuleList, self.decoder_att[task])
        for s, k in enumerate(range(4, -1, -1)):
            a = F.interpolate(a, scale_factor=2.0, mode="bilinear", align_corners=True)
            a = self.decoder_block_att[k](a)
            mask = dec_att[k](torch.cat((unpooled[s], a), dim=1))
            a = mask * dec_out[s]
        return finish_prediction(task, self.heads[task](a))
