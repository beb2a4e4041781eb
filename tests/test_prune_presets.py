"""Pruning presets: one per Table 1 arm at paper and demo scale (Network Slimming per mode, D23), each consistent
with its parent preset."""

from __future__ import annotations

import dataclasses

import pytest

from mtlx_core.prune.hrank import ROUND_SPARSITIES
from mtlx_core.prune.netslim import DECOUPLED_BUDGET, lr_sum, netslim_training
from mtlx_core.prune.pipeline import finetune_config
from mtlx_core.prune.presets import (
    PRUNE_PRESETS,
    find_prune_preset,
    get_prune_preset,
)
from mtlx_core.prune.registry import get_method
from mtlx_core.train.config import PRESETS, TrainConfig

TABLE1 = {  # parent training preset -> (method, variant, grid)
    "nyuv2_deeplab": ("disparse", "static", (0.5, 0.7, 0.8, 0.9)),
    "cityscapes_segnet_mtan_famo": ("netslim", "decoupled", (0.5, 0.6, 0.7, 0.8, 0.9)),
    "nyuv2_segnet_mtan": ("hrank", None, (0.5, 0.75, 0.875, 0.9375)),
    "demo_deeplab": ("disparse", "static", (0.5, 0.7, 0.8, 0.9)),
    "demo_segnet_mtan_famo": ("netslim", "decoupled", (0.5, 0.6, 0.7, 0.8, 0.9)),
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
    assert parent.arch in get_method(preset.method).architectures
    assert preset.variant in get_method(preset.method).variants
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(preset.finetune) <= fields
    dataclasses.replace(parent, **preset.finetune)  # valid overrides
    if preset.method == "hrank":
        assert preset.sparsities == ROUND_SPARSITIES
    if preset.method == "netslim":  # sparsity-trained parent in the preset's mode
        trained = dataclasses.replace(parent, **netslim_training(parent, preset.variant))
        assert trained.bn_l1 > 0
        assert trained.bn_l1_mode == preset.variant
    if preset.variant == "static":
        assert preset.finetune == {}  # trained from the pruned initialisation with the dense recipe
        assert preset.score_batches > 0


def test_paper_magnitude_recipe_is_the_authors():
    ft = get_prune_preset("nyuv2_deeplab_disparse_magnitude").finetune
    assert (ft["iterations"], ft["lr"]) == (1000, 1e-5)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match="valid presets: nyuv2_deeplab_disparse"):
        get_prune_preset("nope")


@pytest.mark.parametrize("name", [n for n, p in PRUNE_PRESETS.items() if p.method == "netslim"])
def test_netslim_finetunes_with_l1_only_in_the_authors_mode(name: str):
    preset = PRUNE_PRESETS[name]
    parent = PRESETS[preset.parent_preset]
    trained = dataclasses.replace(parent, **netslim_training(parent, preset.variant))
    ft = finetune_config(trained, get_method("netslim"), preset.variant, preset, None, None)
    assert (ft.bn_l1 > 0) == (preset.variant == "authors")
    assert ft.optimizer == "adam"  # the sgd mode trains its parent with SGD, fine-tunes with the study's Adam
    if preset.variant == "authors":
        assert (ft.bn_l1, ft.bn_l1_scope) == (1e-4, "all")


def test_demo_parent_is_sparsity_trained_decoupled_on_the_prunable_bns():
    demo = PRESETS["demo_segnet_mtan_famo"]
    assert (demo.bn_l1_mode, demo.bn_l1_scope, demo.optimizer) == ("decoupled", "prunable", "adam")
    assert dataclasses.replace(demo, **netslim_training(demo, "decoupled")) == demo


@pytest.mark.parametrize("preset", ["demo_segnet_mtan_famo", "cityscapes_segnet_mtan_famo"])
def test_decoupled_strength_spends_the_calibrated_l1_budget(preset: str):
    cfg = PRESETS[preset]
    s_prime = netslim_training(cfg, "decoupled")["bn_l1"]
    assert s_prime * lr_sum(cfg) == pytest.approx(DECOUPLED_BUDGET, rel=1e-3)


def test_lr_sum_follows_the_step_schedule():
    cfg = dataclasses.replace(PRESETS["demo_segnet_mtan_famo"], lr=1.0, lr_step=2, lr_gamma=0.5, iterations=5)
    assert lr_sum(cfg) == pytest.approx(1 + 1 + 0.5 + 0.5 + 0.25)
