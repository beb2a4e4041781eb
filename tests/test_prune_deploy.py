"""Inference deployment (``mtlx_core.prune.deploy``): same outputs as the eager model, dense and pruned."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlx_core.models import build_model
from mtlx_core.prune.channels import prune_channels
from mtlx_core.prune.deploy import _disagreement, deploy
from mtlx_core.prune.groups import channel_plan
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
