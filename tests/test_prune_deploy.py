"""Inference deployment (``mtlx_core.prune.deploy``): same outputs as the eager model, dense and pruned."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

from mtlx_core.models import build_model
from mtlx_core.precompute.units import model_costs
from mtlx_core.prune import deploy as deploy_module
from mtlx_core.prune.channels import prune_channels
from mtlx_core.prune.deploy import FORMS, _disagreement, deploy
from mtlx_core.prune.groups import channel_plan
from mtlx_core.prune.latency import LatencySettings
from mtlx_core.prune.netslim import netslim_keep

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _model(arch: str, tasks: dict[str, int], **kw: object) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(arch, tasks, 0.125, **kw)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.mark.parametrize(("arch", "tasks", "kw"), [
    ("segnet_mtan", {"segmentation": 7, "depth": 1}, {}),
    ("deeplab_resnet34", {"segmentation": 7, "normals": 3}, {"head_hidden": 8}),
], ids=["mtan", "deeplab"])
@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "netslim50"])
def test_deployed_matches_eager(arch: str, tasks: dict[str, int], kw: dict, pruned: bool) -> None:
    model = _model(arch, tasks, **kw)
    if pruned:
        plan = channel_plan(model)
        model = prune_channels(model, plan, netslim_keep(model, plan, 0.5)).eval()
    example = torch.zeros(1, 3, 32, 32)
    fast = deploy(model, example)
    assert fast.folded > 0  # BatchNorms were folded away
    for b in (1, 4):
        x = torch.rand(b, 3, 32, 32, generator=torch.Generator().manual_seed(b))
        with torch.inference_mode():
            ref, out = model(x), fast(x)
        assert list(out) == list(ref)
        assert all(out[t].shape == ref[t].shape for t in ref)
        assert _disagreement(ref, out) < 1e-4


def test_disagreement_catches_a_wrong_graph() -> None:
    ref = {"depth": torch.ones(1, 1, 4, 4)}
    assert _disagreement(ref, {"depth": torch.ones(1, 1, 4, 4)}) == 0.0
    assert _disagreement(ref, {"depth": torch.full((1, 1, 4, 4), 1.1)}) == pytest.approx(0.1)


@pytest.mark.parametrize(("arch", "tasks", "kw", "fallback"), [
    ("segnet_mtan", {"segmentation": 7, "depth": 1}, {}, "index_safe"),
    ("deeplab_resnet34", {"segmentation": 7, "normals": 3}, {"head_hidden": 8}, "unfolded"),
], ids=["mtan", "deeplab"])
def test_a_form_that_fails_its_check_falls_back_to_the_next_that_passes(
        arch: str, tasks: dict[str, int], kw: dict, fallback: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the fully folded graph disagrees with the eager model (here made wrong on purpose; in a real study: many
    nearly tied pooled values whose indices flip), SegNet-MTAN keeps its pooling indices exact (BN folded only
    where no index depends on it) and DeepLab, which uses no pooling index, is deployed unfolded."""
    model = _model(arch, tasks, **kw)
    real_fold = deploy_module.fold_batchnorm

    def wrong_when_folding_all(gm: Any, keep: Any = frozenset()) -> int:
        n = real_fold(gm, keep)
        if not keep:  # the first form: spoil one folded conv's weights so that its check fails
            for i in range(n):  # fold_batchnorm's private copies, not the model's tensors
                gm.get_buffer(f"_folded_b{i}").add_(1.0)
        return n

    monkeypatch.setattr(deploy_module, "fold_batchnorm", wrong_when_folding_all)
    fast = deploy(model, torch.zeros(1, 3, 32, 32))
    assert fast.form == fallback
    assert fast.description == FORMS[fallback]
    assert (fast.folded > 0) == (fallback == "index_safe")
    assert ("aten::batch_norm" in str(fast.fn.graph)) == (fallback == "unfolded" or arch == "segnet_mtan")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        assert _disagreement(model(x), fast(x)) < 1e-4
    # the store's cost columns say how this model was timed
    costs = model_costs(model, (3, 32, 32), "cpu", LatencySettings(runs=2, warmup=0))
    assert json.loads(costs["cost_settings"])["form"] == FORMS[fallback]


def test_a_model_that_no_form_reproduces_is_refused_naming_every_form(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model("deeplab_resnet34", {"segmentation": 7, "normals": 3}, head_hidden=8)
    monkeypatch.setattr(deploy_module, "_disagreement", lambda ref, out: 0.5)
    with pytest.raises(RuntimeError, match=r"in every form: form 'folded' .* form 'unfolded' disagrees"):
        deploy(model, torch.zeros(1, 3, 32, 32))
