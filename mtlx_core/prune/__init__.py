"""Pruning of trained multi-task models: DiSparse (unstructured), Network Slimming and HRank (structured).

- ``prune_run(parent_id, method, sparsity, ...)``: prune a stored run, fine-tune it, store the new run;
- ``PRUNE_PRESETS``: the arms of the study's Table 1 (paper and demo scale);
- building blocks: ``channel_plan`` / ``prune_channels`` (physical channel removal), ``netslim_keep``,
  ``feature_map_ranks`` / ``hrank_keep``, ``snip_scores`` / ``magnitude_scores`` / ``calibrated_masks``,
  ``MaskCallback``.

Supported: every method on both architectures (``SUPPORTED``). DeepLab's ASPP heads have no BN, so Network
Slimming prunes only its backbone there; HRank also prunes the ASPP hidden layers (they have ReLUs).
"""

from mtlx_core.prune.channels import ChannelGroup, ChannelPlan, Producer, prune_channels, zero_channels
from mtlx_core.prune.disparse import calibrated_masks, disparse_masks, magnitude_scores, snip_scores
from mtlx_core.prune.groups import channel_plan
from mtlx_core.prune.hrank import ROUND_SPARSITIES, feature_map_ranks, hrank_keep
from mtlx_core.prune.masks import MaskCallback, weight_sparsity
from mtlx_core.prune.netslim import netslim_keep
from mtlx_core.prune.pipeline import check_request, prune_run
from mtlx_core.prune.presets import METHODS, PRUNE_PRESETS, SUPPORTED, VARIANTS, PrunePreset, find_prune_preset

__all__ = [
    "METHODS", "PRUNE_PRESETS", "ROUND_SPARSITIES", "SUPPORTED", "VARIANTS", "ChannelGroup", "ChannelPlan",
    "MaskCallback", "Producer", "PrunePreset", "calibrated_masks", "channel_plan", "check_request",
    "disparse_masks", "feature_map_ranks", "find_prune_preset", "hrank_keep", "magnitude_scores", "netslim_keep",
    "prune_channels", "prune_run", "snip_scores", "weight_sparsity", "zero_channels",
]
