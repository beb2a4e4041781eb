"""The registry of pruning methods, Network Slimming's BN L1 as a training callback (D23), the typed record."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from mtlx_core.models import build_model
from mtlx_core.prune.groups import channel_plan
from mtlx_core.prune.method import PruningMethod, Selection, SelectionContext
from mtlx_core.prune.netslim import BnL1, netslim_training, rating_bns
from mtlx_core.prune.pipeline import _apply
from mtlx_core.prune.record import FinetuneRecord, ModuleShare, PruningRecord, channels_by_kind, module_kind
from mtlx_core.prune.registry import PRUNING_METHODS, config_callbacks, get_method
from mtlx_core.train import resolve_config, train
from mtlx_core.train.config import PRESETS
from mtlx_core.train.loop import build_optimizer


def tiny_mtan() -> nn.Module:
    torch.manual_seed(0)
    return build_model("segnet_mtan", {"segmentation": 7, "depth": 1}, 0.0625)


def test_registry_is_a_plain_dict_of_every_method():
    assert list(PRUNING_METHODS) == ["disparse", "netslim", "hrank", "l1_filter"]
    assert {n for n, m in PRUNING_METHODS.items() if m.structured} == {"netslim", "hrank", "l1_filter"}


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown pruning method 'obd'; valid methods: disparse, netslim, hrank, "
                                         "l1_filter"):
        get_method("obd")


def test_a_structured_method_without_a_selection_step_cannot_exist():
    class NoSelection(PruningMethod):
        name = "broken"
        structured = True

    with pytest.raises(TypeError, match=r"abstract method '?select"):
        NoSelection()  # type: ignore[abstract]


def test_a_structured_selection_returning_masks_fails_loudly():
    ctx = SelectionContext(None, None, "p", PRESETS["demo_segnet_mtan"], PRESETS["demo_segnet_mtan"], 0.5, None,
                           None, None, torch.device("cpu"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="structured method 'hrank': its selection must return kept channels"):
        _apply(get_method("hrank"), Selection(masks={}), ctx, (3, 32, 64))


def test_bn_l1_is_a_callback_of_the_config_not_of_the_loop():
    plain = PRESETS["demo_segnet_mtan"]
    assert config_callbacks(plain) == []
    famo = dataclasses.replace(plain, **netslim_training(plain, "authors"))
    (cb,) = config_callbacks(famo)
    assert isinstance(cb, BnL1)
    assert (cb.s, cb.mode, cb.scope) == (1e-4, "authors", "all")


@pytest.mark.parametrize(("field", "value", "valid"), [("bn_l1_mode", "l2", "authors, decoupled, sgd"),
                                                       ("bn_l1_scope", "some", "all, prunable"),
                                                       ("optimizer", "lbfgs", "adam, sgd")])
def test_training_config_rejects_unknown_sparsity_settings(field: str, value: str, valid: str):
    with pytest.raises(ValueError, match=f"unknown {field} '{value}'.*valid values: {valid}"):
        dataclasses.replace(PRESETS["demo_segnet_mtan"], **{field: value})


def test_sgd_mode_trains_with_sgd_momentum():
    cfg = dataclasses.replace(PRESETS["demo_segnet_mtan_famo"], **netslim_training(PRESETS["demo_segnet_mtan_famo"],
                                                                                   "sgd"))
    opt = build_optimizer(tiny_mtan(), cfg)
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.9
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 8 / 64)
    with pytest.raises(ValueError, match="bn_l1_mode 'sgd' trains with optimizer 'sgd'"):
        dataclasses.replace(cfg, optimizer="adam")


def test_decoupled_step_soft_thresholds_exactly_the_rating_bns():
    model = tiny_mtan()
    modules = dict(model.named_modules())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.randn(m.num_features, generator=g))
    before = {n: m.weight.detach().clone() for n, m in modules.items() if isinstance(m, nn.BatchNorm2d)}
    rating = set(rating_bns(model, channel_plan(model)))
    assert "encoder_att.segmentation.0.4" not in rating  # an attention mask's last BN rates nothing
    cb = BnL1(2.0, "decoupled", "prunable")
    cb.after_backward(model, 0)  # the decoupled mode leaves the gradients alone
    cb.after_step(model, 0, lr=0.25)  # lr * s' = 0.5
    for name, w0 in before.items():
        w = modules[name].weight.detach()
        expected = torch.sign(w0) * (w0.abs() - 0.5).clamp_min(0) if name in rating else w0
        assert torch.allclose(w, expected), name


def test_authors_subgradient_goes_on_every_bn_gradient():
    model = tiny_mtan()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.weight.grad = torch.zeros_like(m.weight)
    BnL1(1e-4, "authors", "all").after_backward(model, 0)
    for m in bns:
        assert torch.equal(m.weight.grad, 1e-4 * torch.sign(m.weight.detach()))


def test_training_in_decoupled_mode_applies_the_proximal_step(tmp_path: Path):
    from mtlx_core.data.synth import generate_synth

    generate_synth(tmp_path / "data", n_train=4, n_val=2, height=32, width=64, seed=1, progress=False)
    cfg = resolve_config("demo_segnet_mtan_famo", data_root=str(tmp_path / "data"), iterations=1, batch_size=2,
                         width=0.0625, checkpoint_every=1, device="cpu", bn_l1=1e6)  # lr * s' zeroes every gamma
    result = train(cfg, tmp_path / "runs", progress=False)
    state = torch.load(result.path / "model.pt", weights_only=True)
    model = tiny_mtan()
    rating = rating_bns(model, channel_plan(model))
    assert all(torch.all(state[f"{b}.weight"] == 0) for b in rating)
    assert torch.all(state["encoder_att.segmentation.0.4.weight"] != 0)  # out of the prunable scope


def test_module_kinds_of_both_architectures():
    assert [module_kind(n) for n in ("encoder_block.0.0", "conv_block_dec.1.0.0", "encoder_block_att.2.0",
                                     "decoder_att.depth.1.0", "heads.depth.1", "backbone.blocks.0.0.conv1")] == \
        ["trunk_encoder", "trunk_decoder", "shared_attention", "attention_hidden", "heads", "trunk_encoder"]
    with pytest.raises(ValueError, match="no module kind"):
        module_kind("classifier.0")


def test_channels_by_kind_counts_the_writing_convs():
    from mtlx_core.prune.channels import prune_channels

    model = tiny_mtan().eval()
    plan = channel_plan(model)
    keep = {"encatt2": torch.tensor([0]), "dec1.first": torch.tensor([0, 1])}
    shares = {m.kind: m for m in channels_by_kind(model, prune_channels(model, plan, keep), plan)}
    modules = dict(model.named_modules())
    assert shares["shared_attention"].before - shares["shared_attention"].after == \
        modules["encoder_block_att.2.0"].out_channels - 1
    assert shares["trunk_decoder"].before - shares["trunk_decoder"].after == \
        modules["decoder_block.1.0"].out_channels - 2
    assert shares["trunk_encoder"].removed == 0.0


def record() -> PruningRecord:
    ft = FinetuneRecord("adam", 40, 4e-3, None, 0.35, 8, 0.0, 0.0, "decoupled", "famo", "parent weights")
    return PruningRecord("netslim", "decoupled", True, 0.7, 0.8, "demo_segnet_mtan_famo_netslim", "run", 100, 20,
                         1000, 300, (3, 64, 96), ft, (ModuleShare("trunk_encoder", 10, 3, "channels"),),
                         channels_removed=0.7, small_gamma_kept=2, netslim_mode="decoupled",
                         details={"threshold": 0.01})


def test_record_reads_back_typed_and_equal():
    r = record()
    d = r.to_dict()
    assert d["removed_by_kind"][0]["removed"] == pytest.approx(0.7)
    assert d["param_sparsity"] == pytest.approx(0.8)
    assert PruningRecord.from_dict(d) == r


def test_record_written_before_the_typed_record_reads_back():
    legacy = {"method": "hrank", "variant": None, "target_sparsity": 0.5, "structured": True, "preset": "p",
              "root_parent_id": "r", "params_before": 10, "params_after": 5, "param_sparsity": 0.5,
              "macs_before": 8, "macs_after": 4, "input_shape": [3, 32, 64], "achieved_sparsity": 0.5,
              "round": 1, "rank_batches": 5, "finetune": {"optimizer": "adam", "iterations": 2, "lr": 1e-3,
                                                          "lr_step": None, "lr_gamma": 0.5, "batch_size": 2,
                                                          "weight_decay": 0.0, "bn_l1": 0.0, "weighting": "equal",
                                                          "from": "parent weights"}}
    r = PruningRecord.from_dict(legacy)
    assert r.details == {"round": 1, "rank_batches": 5}
    assert r.finetune.start == "parent weights"
    assert r.removed_by_kind == ()


def test_record_missing_a_field_names_it():
    d = record().to_dict()
    del d["macs_after"]
    with pytest.raises(ValueError, match="pruning record lacks macs_after"):
        PruningRecord.from_dict(d)
