"""Exact graph rewrites for IROF forwards, the pinning fallback, and the normals head's norm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _explain_models import calibrated_study_model, photos, single_thread  # noqa: F401
from torch import nn

import mtlx_core.explain.fastforward as ff
from mtlx_core.explain.fastforward import FastForward, ForwardSettings, trace_task
from mtlx_core.explain.graph_rewrites import channels_last_max_pool
from mtlx_core.models.base import finish_prediction

PINNED = {torch.ops.aten._slow_conv2d_forward.default, torch.ops.aten.slow_conv_dilated2d.default,
          torch.ops.aten.mkldnn_convolution.default}


class Pools(nn.Module):
    """Both pooling ops the study models use: 2x2 with indices (SegNet) and 3x3 / 2 / pad 1 (ResNet stem)."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y, idx = F.max_pool2d(x, 2, 2, return_indices=True)
        z = F.max_pool2d(x, 3, 2, 1)
        return {"y": y, "idx": idx.float(), "z": z, "unpooled": F.max_unpool2d(y, idx, 2, 2)}


def tricky_input() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(3, 5, 16, 24, generator=g))
    x[:, :, 2:10, 4:14] = 0.25  # flat region: every window ties, the first maximum must win
    x[0, 1, 0, 0] = x[0, 1, 1, 1] = float("nan")  # NaN is taken as the maximum
    x[1, 2, 4, 4] = -0.0
    return x


def test_channels_last_max_pool_gives_the_same_values_and_indices_bit_for_bit() -> None:
    model, x = Pools(), tricky_input()
    for name in ("y", "idx", "z", "unpooled"):
        gm = trace_task(model, name, x[:2])
        ref = gm(x)
        assert channels_last_max_pool(gm) >= 1
        out = gm(x)
        assert torch.equal(out.nan_to_num(7.0), ref.nan_to_num(7.0)), name
        assert torch.equal(out.isnan(), ref.isnan()), name
        assert out.is_contiguous()
        assert not any(n.target in (torch.ops.aten.max_pool2d_with_indices.default, torch.ops.aten.max_pool2d.default)
                       for n in gm.graph.nodes)


def test_graph_without_bit_identical_pinning_keeps_the_batched_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.stack(photos((32, 64)))
    model = calibrated_study_model("deeplab_resnet34", x)
    monkeypatch.setattr(ff, "bitwise_batch1", lambda *a, **k: False)
    fwd = FastForward(model, ForwardSettings())
    out = fwd("segmentation", x)
    gm = fwd._fns[("segmentation", 32, 64)]
    assert fwd.bitwise[("segmentation", 32, 64)] is False
    assert not any(n.target in PINNED for n in gm.graph.nodes)
    with torch.no_grad():
        torch.testing.assert_close(out, model(x)["segmentation"], rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(ff, "bitwise_batch1", lambda *a, **k: True)
    fwd = FastForward(model, ForwardSettings())
    fwd("segmentation", x)
    assert fwd.bitwise[("segmentation", 32, 64)] is True
    assert any(n.target in PINNED for n in fwd._fns[("segmentation", 32, 64)].graph.nodes)


def test_normals_head_gives_unit_vectors_equal_to_the_l2_normalisation() -> None:
    y = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    out = finish_prediction("normals", y)
    torch.testing.assert_close(out, y / y.norm(dim=1, keepdim=True), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4, 8, 8, dtype=torch.float64))


def test_normals_head_has_a_finite_gradient_at_a_zero_vector() -> None:
    y = torch.zeros(1, 3, 2, 2, requires_grad=True)
    out = finish_prediction("normals", y)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.isfinite(y.grad).all()


def test_normals_head_value_of_a_pixel_does_not_depend_on_the_batch() -> None:
    y = torch.randn(6, 3, 17, 23)
    out = finish_prediction("normals", y)
    for i in range(len(y)):
        assert torch.equal(out[i:i + 1], finish_prediction("normals", y[i:i + 1].clone()))
