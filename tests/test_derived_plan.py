"""Channel plans derived from Torch-Pruning's dependency graph: their groups, physical removal with mtlx's
structured methods on a CNN mtlx does not ship, the DeepLab plan against the derived one, SegNet-MTAN's unpooling,
and torchvision's LR-ASPP with a second head."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtlx_core.models import build_model
from mtlx_core.models.surgery import count_params
from mtlx_core.prune.channels import ChannelPlan, prune_channels, removed_share, zero_channels
from mtlx_core.prune.derived_plan import default_example_input, derive_channel_plan
from mtlx_core.prune.groups import channel_plan, deeplab_plan
from mtlx_core.prune.hrank import feature_map_ranks, hrank_keep
from mtlx_core.prune.l1filter import l1_filter_keep
from mtlx_core.prune.netslim import netslim_keep

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _cbr(cin: int, cout: int, k: int = 3, groups: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d, nn.ReLU]:
    return nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()


class TinyTwoHead(nn.Module):
    """A two-task CNN with a residual sum, a depthwise conv gated by squeeze-and-excitation and a concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.stem_bn, self.stem_act = _cbr(3, 16)
        self.a, self.a_bn, self.a_act = _cbr(16, 12)
        self.b, self.b_bn = _cbr(12, 16)[:2]
        self.res_act = nn.ReLU()
        self.dw, self.dw_bn, self.dw_act = _cbr(16, 16, groups=16)
        self.se1, self.se_act, self.se2 = nn.Conv2d(16, 6, 1), nn.ReLU(), nn.Conv2d(6, 16, 1)
        self.side, self.side_bn, self.side_act = _cbr(16, 8, 1)
        self.fuse, self.fuse_bn, self.fuse_act = _cbr(24, 20)
        self.seg = nn.Sequential(*_cbr(20, 10), nn.Conv2d(10, 5, 1))
        self.depth = nn.Conv2d(20, 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        x = self.stem_act(self.stem_bn(self.stem(x)))
        r = self.res_act(self.b_bn(self.b(self.a_act(self.a_bn(self.a(x))))) + x)
        d = self.dw_act(self.dw_bn(self.dw(r)))
        d = d * torch.sigmoid(self.se2(self.se_act(self.se1(F.adaptive_avg_pool2d(d, 1)))))
        s = self.side_act(self.side_bn(self.side(r)))
        f = F.max_pool2d(self.fuse_act(self.fuse_bn(self.fuse(torch.cat([d, s], 1)))), 2)
        return {"segmentation": F.interpolate(self.seg(f), size=size, mode="bilinear", align_corners=False),
                "depth": F.interpolate(self.depth(f), size=size, mode="bilinear", align_corners=False)}


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with random weights and non-trivial BN statistics, in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model.eval()


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return randomised(TinyTwoHead())


X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def producers(plan: ChannelPlan, prunable: bool = True) -> set[frozenset[tuple[str, str | None, bool]]]:
    return {frozenset((p.conv, p.bn, p.tied) for p in g.producers) for g in plan.groups.values()
            if g.prunable == prunable and g.producers}


def writer(plan: ChannelPlan, conv: str) -> str:
    return next(g.name for g in plan.groups.values() for p in g.producers if p.conv == conv)


def test_derived_plan_of_a_tiny_cnn_couples_residual_depthwise_gate_and_concatenation() -> None:
    plan = derive_channel_plan(tiny(), X[:1])
    assert producers(plan) == {
        frozenset({("stem", "stem_bn", False), ("b", "b_bn", False), ("dw", "dw_bn", False), ("se2", None, True)}),
        frozenset({("a", "a_bn", False)}), frozenset({("se1", None, False)}),
        frozenset({("side", "side_bn", False)}), frozenset({("fuse", "fuse_bn", False)}),
        frozenset({("seg.0", "seg.1", False)})}
    assert producers(plan, prunable=False) == {frozenset({("seg.3", None, False)}), frozenset({("depth", None, False)})}
    chain = writer(plan, "stem")
    assert plan.inputs["fuse"] == (chain, writer(plan, "side"))  # the concatenation: two input parts
    assert plan.inputs["dw"] == (chain,)  # a depthwise conv reads the group it writes
    assert plan.inputs["se1"] == (chain,)
    assert plan.inputs["se2"] == (writer(plan, "se1"),)
    image = plan.groups[plan.inputs["stem"][0]]
    assert (image.size, image.prunable, image.producers) == (3, False, [])
    assert sorted(plan.groups[chain].rank_sources) == ["dw_act", "res_act", "stem_act"]
    assert plan.groups[writer(plan, "se1")].rank_sources == ["se_act"]


def test_channel_plan_falls_back_to_the_derived_plan_for_an_unregistered_model() -> None:
    model = tiny()
    assert tuple(default_example_input(model).shape) == (1, 3, 64, 64)
    assert producers(channel_plan(model)) == producers(derive_channel_plan(model, X[:1]))


def _keep(method: str, model: nn.Module, plan: ChannelPlan) -> dict[str, torch.Tensor]:
    select: dict[str, Callable[[], dict[str, torch.Tensor]]] = {
        "l1_filter": lambda: l1_filter_keep(model, plan, 0.5),
        "netslim": lambda: netslim_keep(model, plan, 0.5),
        "hrank": lambda: hrank_keep(plan, feature_map_ranks(model, plan, [X]))}
    return select[method]()


@pytest.mark.parametrize(("method", "kind"), [("l1_filter", ""), ("netslim", "bn"), ("hrank", "rank")])
def test_structured_methods_remove_half_the_channels_of_a_tiny_cnn_and_equal_its_masked_version(
        method: str, kind: str) -> None:
    model = tiny()
    plan = derive_channel_plan(model, X[:1])
    keep = _keep(method, model, plan)
    small = prune_channels(model, plan, keep)
    assert type(small) is TinyTwoHead
    assert small.dw.groups == small.dw.in_channels == small.dw.out_channels == len(keep[writer(plan, "stem")]) < 16
    assert count_params(small) < count_params(model)
    assert removed_share(plan, keep, kind) == pytest.approx(0.5, abs=0.05)
    masked = zero_channels(copy.deepcopy(model), plan, keep)
    with torch.no_grad():
        dense, pruned, zeroed = model(X), small(X), masked(X)
    for t in ("segmentation", "depth"):
        assert pruned[t].shape == dense[t].shape
        torch.testing.assert_close(pruned[t], zeroed[t], atol=1e-5, rtol=1e-4)


def test_deeplab_hand_written_plan_equals_the_derived_one() -> None:
    model = randomised(build_model("deeplab_resnet34", {"segmentation": 7, "normals": 3}, 0.125, head_hidden=8))
    hand, derived = deeplab_plan(model), derive_channel_plan(model, torch.zeros(1, 3, 64, 64))

    def ranks(plan: ChannelPlan) -> dict[frozenset[tuple[str, str | None, bool]], list[str]]:
        return {frozenset((p.conv, p.bn, p.tied) for p in g.producers): sorted(g.rank_sources)
                for g in plan.prunable()}

    def parts(plan: ChannelPlan) -> dict[str, list[frozenset[str] | None]]:  # per conv: writers of each prunable part
        return {c: [frozenset(p.conv for p in plan.groups[s].producers) if plan.groups[s].prunable else None
                    for s in segs] for c, segs in plan.inputs.items()}

    assert ranks(hand) == ranks(derived)
    assert parts(hand) == parts(derived)
    assert {p.conv for g in hand.groups.values() if not g.prunable for p in g.producers} == \
        {p.conv for g in derived.groups.values() if not g.prunable for p in g.producers}


def test_segnet_mtan_unpooling_with_indices_is_refused_with_the_operation_named() -> None:
    model = build_model("segnet_mtan", {"segmentation": 7, "depth": 1}, 0.125).eval()
    with pytest.raises(ValueError, match=r"cannot follow the coupling of operation MaxUnpool2DBackward0 after module"):
        derive_channel_plan(model, torch.zeros(1, 3, 32, 32))


class LRASPPTwoTask(nn.Module):
    """torchvision's LR-ASPP on MobileNetV3-Large (no weights) with a second LR-ASPP head for depth."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        from torchvision.models.segmentation import lraspp_mobilenet_v3_large
        from torchvision.models.segmentation.lraspp import LRASPPHead

        base = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=classes)
        self.backbone, self.seg_head = base.backbone, base.classifier
        self.depth_head = LRASPPHead(40, 960, 1, 128)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.backbone(x)
        return {t: F.interpolate(h(f), size=x.shape[-2:], mode="bilinear", align_corners=False)
                for t, h in (("segmentation", self.seg_head), ("depth", self.depth_head))}


def test_lraspp_mobilenet_v3_with_a_second_head_is_covered_and_pruned_like_its_masked_version() -> None:
    torch.manual_seed(0)
    model = randomised(LRASPPTwoTask(5))
    plan = derive_channel_plan(model, torch.zeros(1, 3, 64, 64))
    kept_whole = {p.conv for g in plan.groups.values() if not g.prunable for p in g.producers}
    assert kept_whole == {f"{h}.{c}" for h in ("seg_head", "depth_head") for c in ("low_classifier", "high_classifier")}
    gates = {p.conv for g in plan.prunable() for p in g.producers if p.tied}
    assert {"seg_head.scale.1", "depth_head.scale.1"} <= gates  # LR-ASPP's sigmoid product
    assert "backbone.4.block.2.fc2" in gates  # a squeeze-and-excitation product
    keep = l1_filter_keep(model, plan, 0.5)
    small = prune_channels(model, plan, keep)
    masked = zero_channels(copy.deepcopy(model), plan, keep)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        pruned, zeroed = small(x), masked(x)
    assert count_params(small) < 0.6 * count_params(model)
    for t, c in (("segmentation", 5), ("depth", 1)):
        assert pruned[t].shape == (1, c, 64, 64)
        torch.testing.assert_close(pruned[t], zeroed[t], atol=1e-4, rtol=1e-3)


class ScaledByBuffer(nn.Module):
    """A conv whose output is multiplied by a per-channel buffer: a coupling autograd does not see."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.a_bn, self.a_act = _cbr(3, 8)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 8).view(1, 8, 1, 1))
        self.b, self.b_bn, self.b_act = _cbr(8, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.a_act(self.a_bn(self.a(x))) * self.scale
        return {"segmentation": self.head(self.b_act(self.b_bn(self.b(y))))}


def test_a_product_with_an_untracked_buffer_keeps_that_group_whole_and_no_other() -> None:
    plan = derive_channel_plan(randomised(ScaledByBuffer()), X[:1])
    assert {g.name for g in plan.prunable()} == {"b"}
    assert not plan.groups["a"].prunable
    assert not plan.groups["head"].prunable


def test_a_model_that_does_not_return_a_dict_gets_a_clear_error() -> None:
    with pytest.raises(ValueError, match="forward returns a dict of tensors, Sequential returned Tensor"):
        derive_channel_plan(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), X[:1])


def test_segnet_mtan_attention_products_are_followed_and_the_unpooling_is_what_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mtlx_core.prune import derived_plan
    from mtlx_core.prune.groups import segnet_mtan_plan

    monkeypatch.setattr(derived_plan, "_refuse_hidden_couplings", lambda trace: None)  # what the refusal hides
    model = randomised(build_model("segnet_mtan", {"segmentation": 7, "depth": 1}, 0.125))
    hand, derived = segnet_mtan_plan(model), derive_channel_plan(model, torch.zeros(1, 3, 32, 32))
    found = producers(derived)
    for j in range(4):  # encoder stage j: its last conv and every task's attention mask (tied), not its decoder half
        encoder_half = frozenset((p.conv, p.bn, p.tied) for p in hand.groups[f"stage{j}"].producers
                                 if p.conv.startswith(("conv_block_enc", "encoder_att")))
        assert encoder_half in found
        assert any(p.tied for p in hand.groups[f"stage{j}"].producers)
        assert encoder_half != frozenset((p.conv, p.bn, p.tied) for p in hand.groups[f"stage{j}"].producers)
