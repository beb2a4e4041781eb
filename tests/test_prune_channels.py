"""Structured pruning: physical removal equals masking, coupling rules, Network Slimming and HRank selection."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
from torch import nn

from mtlx_core.models import build_model
from mtlx_core.prune.channels import (
    ChannelGroup,
    ChannelPlan,
    Producer,
    prune_channels,
    removed_share,
    zero_channels,
)
from mtlx_core.prune.groups import channel_plan
from mtlx_core.prune.hrank import feature_map_ranks, hrank_keep, hrank_round, tie_shares
from mtlx_core.prune.l1filter import l1_filter_keep
from mtlx_core.prune.netslim import netslim_keep

MTAN3 = ("segnet_mtan", {"segmentation": 7, "depth": 1, "normals": 3}, {})
MTAN_FAMO = ("segnet_mtan", {"segmentation": 7, "depth": 1}, {})
MTAN_ONE = ("segnet_mtan", {"depth": 1}, {})
DEEPLAB = ("deeplab_resnet34", {"segmentation": 7, "normals": 3}, {"head_hidden": 8})
ARCHS = [MTAN3, MTAN_FAMO, MTAN_ONE, DEEPLAB]
IDS = ["mtan-3tasks", "mtan-seg+depth", "mtan-depth", "deeplab-seg+normals"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def randomised(arch: str, tasks: dict[str, int], kw: dict, width: float = 0.125) -> nn.Module:
    """A model whose BN layers have non-trivial statistics, in eval mode."""
    torch.manual_seed(0)
    model = build_model(arch, tasks, width, **kw)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model.eval()


def random_keep(plan: ChannelPlan, seed: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    keep = {}
    for grp in plan.prunable():
        n = int(torch.randint(1, grp.size + 1, (1,), generator=g))
        keep[grp.name] = torch.randperm(grp.size, generator=g)[:n]
    return keep


def netslim_selection(model: nn.Module, plan: ChannelPlan) -> dict[str, torch.Tensor]:
    return netslim_keep(model, plan, 0.6)


def hrank_selection(model: nn.Module, plan: ChannelPlan) -> dict[str, torch.Tensor]:
    return hrank_keep(plan, feature_map_ranks(model, plan, [torch.rand(2, 3, 32, 64)]))


SELECTIONS: dict[str, Callable[[nn.Module, ChannelPlan], dict[str, torch.Tensor]]] = {
    "random": lambda _m, plan: random_keep(plan), "netslim": netslim_selection, "hrank": hrank_selection,
    "l1_filter": lambda m, plan: l1_filter_keep(m, plan, 0.7)}


@pytest.mark.parametrize("selection", list(SELECTIONS))
@pytest.mark.parametrize(("arch", "tasks", "kw"), ARCHS, ids=IDS)
def test_physically_pruned_model_equals_masked_model(arch: str, tasks: dict[str, int], kw: dict, selection: str):
    model = randomised(arch, tasks, kw)
    plan = channel_plan(model)
    keep = SELECTIONS[selection](model, plan)
    assert removed_share(plan, keep) > 0.2
    small = prune_channels(model, plan, keep).eval()
    x = torch.rand(2, 3, 32, 64, generator=torch.Generator().manual_seed(5))
    masked = zero_channels(model, plan, keep)
    with torch.no_grad():
        want, got = masked(x), small(x)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    assert list(got) == list(want) == list(tasks)
    for t in tasks:
        assert got[t].shape == want[t].shape == (2, tasks[t], 32, 64)
        assert (got[t] - want[t]).abs().max() < 1e-5, t


@pytest.mark.parametrize(("arch", "tasks", "kw"), ARCHS, ids=IDS)
def test_plan_covers_every_conv_and_bn_and_rebuilds_on_the_pruned_model(arch: str, tasks: dict[str, int], kw: dict):
    model = randomised(arch, tasks, kw)
    plan = channel_plan(model)  # .check() ran: every conv / BN exactly once, channel counts agree
    keep = random_keep(plan)
    small_plan = channel_plan(prune_channels(model, plan, keep))
    for name, idx in keep.items():
        assert small_plan.groups[name].size == idx.numel()


def test_attention_last_bn_rates_nothing_and_head_outputs_are_never_pruned():
    plan = channel_plan(randomised(*MTAN3))
    sources = [b for g in plan.groups.values() for b in g.bn_sources]
    assert sources
    assert not [b for b in sources if re.fullmatch(r"(en|de)coder_att\.\w+\.\d\.4", b)]
    tied = [p.bn for g in plan.groups.values() for p in g.producers if p.tied]
    assert len(tied) == 3 * 10  # every task's ten attention masks
    for t in ("segmentation", "depth", "normals"):
        assert not plan.groups[f"heads.{t}.out"].prunable
    deeplab = channel_plan(randomised(*DEEPLAB))
    assert not any(g.prunable for n, g in deeplab.groups.items() if n.endswith(".out"))


def test_coupled_channels_form_one_group():
    plan = channel_plan(randomised(*MTAN3))
    stage2 = {p.conv for p in plan.groups["stage2"].producers}
    # encoder stage 2's output, the decoder conv unpooled with its indices, and every task's masks on both
    assert {"conv_block_enc.2.1.0", "conv_block_dec.3.1.0", "encoder_att.depth.2.3",
            "decoder_att.normals.3.3"} <= stage2
    readers = {c for c, segs in plan.inputs.items() if "stage2" in segs}
    assert {"encoder_block.3.0", "encoder_block_att.2.0", "decoder_block.2.0", "decoder_block_att.2.0",
            "decoder_att.segmentation.2.0"} <= readers
    res = {p.conv for p in channel_plan(randomised(*DEEPLAB)).groups["res3"].producers}
    assert res == {"backbone.blocks.3.0.downsample.0"} | {f"backbone.blocks.3.{i}.conv2" for i in range(3)}


def test_every_group_keeps_at_least_one_channel():
    model = randomised(*MTAN_FAMO)
    plan = channel_plan(model)
    keep = netslim_keep(model, plan, 0.99)
    assert all(keep[g.name].numel() >= 1 for g in plan.prunable("bn"))
    prune_channels(model, plan, keep)
    with pytest.raises(ValueError, match="at least one must survive"):
        prune_channels(model, plan, {"stage0": torch.tensor([], dtype=torch.long)})


def test_netslim_removes_the_smallest_scale_factors_under_one_global_threshold():
    model = randomised(*DEEPLAB)
    plan = channel_plan(model)
    keep = netslim_keep(model, plan, 0.5)
    modules = dict(model.named_modules())
    score = {g.name: torch.stack([modules[b].weight.abs() for b in g.bn_sources]).mean(0) for g in plan.prunable("bn")}
    kept = torch.cat([score[n][keep[n]] for n in score])
    dropped = torch.cat([score[n][~torch.isin(torch.arange(score[n].numel()), keep[n])] for n in score])
    assert dropped.max() <= kept.min()
    assert abs(removed_share(plan, keep, "bn") - 0.5) < 0.01
    assert "heads.segmentation.0.hidden1" not in keep  # ASPP layers have no BN to rate them


def rank_r_image(rank: int, g: torch.Generator) -> torch.Tensor:
    """A non-negative 32 x 64 map of matrix rank ``rank`` (sum of positive outer products)."""
    return sum(torch.outer(torch.rand(32, generator=g) + 0.1, torch.rand(64, generator=g) + 0.1)
               for _ in range(rank))


def test_hrank_removes_exactly_the_lowest_rank_filters():
    model = randomised(*MTAN3, width=0.125).eval()  # encoder_block.0 has 8 filters
    g = torch.Generator().manual_seed(7)
    x = torch.stack([torch.stack([rank_r_image(r, g) for r in (1, 2, 4)]) for _ in range(2)])  # (2, 3, 32, 64)
    # filter j = 1x1 (centre tap) mix of the input channels chosen by the bits of rank j: ranks 0..7
    rank_of_filter = torch.randperm(8, generator=g)
    bn = model.encoder_block[0][1]
    with torch.no_grad():
        w = torch.zeros(8, 3, 3, 3)
        for j, r in enumerate(rank_of_filter.tolist()):
            for c, bit in enumerate((1, 2, 4)):
                if r & bit:
                    w[j, c, 1, 1] = 1.0 + 0.1 * c
        model.encoder_block[0][0].weight.copy_(w)
        model.encoder_block[0][0].bias.zero_()
        bn.weight.fill_(1.0), bn.bias.zero_(), bn.running_mean.zero_(), bn.running_var.fill_(1.0)
    plan = channel_plan(model)
    ranks = feature_map_ranks(model, plan, [x])
    assert torch.equal(ranks["enc0.first"], rank_of_filter.float())
    keep = hrank_keep(plan, ranks)
    assert set(keep["enc0.first"].tolist()) == set((rank_of_filter >= 4).nonzero().flatten().tolist())
    assert all(keep[n].numel() == plan.groups[n].size - plan.groups[n].size // 2 for n in keep)


@pytest.mark.parametrize("bad", [0.6, 0.7, 0.25, 0.99])
def test_hrank_rejects_sparsity_outside_the_round_grid(bad: float):
    with pytest.raises(ValueError, match=re.escape("one of the round results 0.5, 0.75, 0.875, 0.9375")):
        hrank_round(bad)


def one_group(size: int) -> ChannelPlan:
    return ChannelPlan({"g": ChannelGroup("g", size, [Producer("conv")])}, {})


def test_hrank_ties_are_broken_by_mean_activation():
    plan = one_group(4)
    ranks = {"g": torch.tensor([2.0, 2.0, 2.0, 5.0])}
    acts = {"g": torch.tensor([0.3, 0.1, 0.2, 0.0])}
    assert hrank_keep(plan, ranks, acts)["g"].tolist() == [0, 3]  # channels 1 and 2 have the lowest activations
    assert hrank_keep(plan, ranks)["g"].tolist() == [2, 3]  # without activations: by index


def test_hrank_tie_shares_count_shared_ranks_and_the_tied_block_at_the_cut():
    plan = one_group(4)
    tied, decided = tie_shares(plan, {"g": torch.tensor([2.0, 2.0, 2.0, 5.0])})
    assert (tied, decided) == (0.75, 0.75)
    tied, decided = tie_shares(plan, {"g": torch.tensor([1.0, 1.0, 3.0, 4.0])})
    assert (tied, decided) == (0.5, 0.0)  # the tie sits below the cut: both go either way
