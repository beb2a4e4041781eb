"""Pruning presets: one per Table 1 arm at paper and demo scale, each consistent with its parent preset."""

from __future__ import annotations

import dataclasses

import pytest

from mtlx_core.prune.hrank import ROUND_SPARSITIES
from mtlx_core.prune.presets import (
    PRUNE_PRESETS,
    SUPPORTED,
    find_prune_preset,
    get_prune_preset,
)
from mtlx_core.train.config import PRESETS, TrainConfig

TABLE1 = {  # parent training preset -> (method, variant, grid)
    "nyuv2_deeplab": ("disparse", "static", (0.5, 0.7, 0.8, 0.9)),
    "cityscapes_segnet_mtan_famo": ("netslim", None, (0.5, 0.6, 0.7, 0.8, 0.9)),
    "nyuv2_segnet_mtan": ("hrank", None, (0.5, 0.75, 0.875, 0.9375)),
    "demo_deeplab": ("disparse", "static", (0.5, 0.7, 0.8, 0.9)),
    "demo_segnet_mtan_famo": ("netslim", None, (0.5, 0.6, 0.7, 0.8, 0.9)),
    "demo_segnet_mtan": ("hrank", None, (0.5, 0.75, 0.875, 0.9375)),
}


@pytest.mark.parametrize("parent", list(TABLE1))
def test_every_table1_arm_has_a_preset_with_its_grid(parent: str):
    method, variant, grid = TABLE1[parent]
    preset = find_prune_preset(parent, method, variant)
    assert preset is not None
    assert preset.sparsities == grid


@pytest.mark.parametrize("name", list(PRUNE_PRESETS))
def test_presets_fit_their_parent_preset(name: str):
    preset = PRUNE_PRESETS[name]
    parent = PRESETS[preset.parent_preset]
    assert (preset.method, parent.arch) in SUPPORTED
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(preset.finetune) <= fields
    dataclasses.replace(parent, **preset.finetune)  # valid overrides
    if preset.method == "hrank":
        assert preset.sparsities == ROUND_SPARSITIES
    if preset.method == "netslim":
        assert parent.bn_l1 > 0  # sparsity-trained parent, L1 kept while fine-tuning
    if preset.variant == "static":
        assert preset.finetune == {}  # trained from the pruned initialisation with the dense recipe
        assert preset.score_batches > 0


def test_paper_magnitude_recipe_is_the_authors():
    ft = get_prune_preset("nyuv2_deeplab_disparse_magnitude").finetune
    assert (ft["iterations"], ft["lr"]) == (1000, 1e-5)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match="valid presets: nyuv2_deeplab_disparse"):
        get_prune_preset("nope")
