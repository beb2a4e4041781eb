"""Pruning of trained multi-task models: methods as registered strategies (``PRUNING_METHODS``).

- ``prune_run(parent_id, method, sparsity, ...)``: prune a stored run, fine-tune it, store the new run with its
  ``PruningRecord``; ``control_run(parent_id, method, ...)``: its training-budget control (0 % sparsity, the same
  fine-tuning);
- ``PRUNING_METHODS`` / ``get_method``: DiSparse (unstructured), Network Slimming (modes ``decoupled``,
  ``authors``, ``sgd``: D23), HRank and L1-norm filters (structured, channels removed physically);
- ``PRUNE_PRESETS``: the arms of the study's Table 1 (paper and demo scale);
- building blocks: ``channel_plan`` / ``prune_channels`` (physical channel removal), ``netslim_keep``,
  ``feature_map_ranks`` / ``hrank_keep``, ``l1_filter_keep``, ``snip_scores`` / ``magnitude_scores`` /
  ``calibrated_masks``, ``MaskCallback``, ``BnL1``.

Every method handles both architectures. DeepLab's ASPP heads have no BN, so Network Slimming prunes only its
backbone there; HRank and L1-norm filters also prune the ASPP hidden layers.
"""

from mtlx_core.prune.channels import ChannelGroup, ChannelPlan, Producer, prune_channels, zero_channels
from mtlx_core.prune.control import control_run
from mtlx_core.prune.disparse import calibrated_masks, disparse_masks, magnitude_scores, snip_scores
from mtlx_core.prune.groups import channel_plan
from mtlx_core.prune.hrank import ROUND_SPARSITIES, feature_map_ranks, hrank_keep
from mtlx_core.prune.l1filter import l1_filter_keep
from mtlx_core.prune.masks import MaskCallback, weight_sparsity
from mtlx_core.prune.method import PruningMethod, Selection, SelectionContext
from mtlx_core.prune.netslim import BnL1, netslim_keep, netslim_training
from mtlx_core.prune.pipeline import check_request, prune_run
from mtlx_core.prune.presets import PRUNE_PRESETS, PrunePreset, find_prune_preset
from mtlx_core.prune.record import PruningRecord
from mtlx_core.prune.registry import PRUNING_METHODS, get_method

__all__ = [
    "PRUNE_PRESETS", "PRUNING_METHODS", "ROUND_SPARSITIES", "BnL1", "ChannelGroup", "ChannelPlan", "MaskCallback",
    "Producer", "PrunePreset", "PruningMethod", "PruningRecord", "Selection", "SelectionContext", "calibrated_masks",
    "channel_plan", "check_request", "control_run", "disparse_masks", "feature_map_ranks", "find_prune_preset",
    "get_method",
    "hrank_keep", "l1_filter_keep", "magnitude_scores", "netslim_keep", "netslim_training", "prune_channels",
    "prune_run", "snip_scores", "weight_sparsity", "zero_channels",
]
