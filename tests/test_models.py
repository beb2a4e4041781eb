"""Architectures, registry, ownership and structured-pruning surgery (tiny widths, small inputs, CPU)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch
from torch import nn

from mtlx_core.models import MODELS, build_model
from mtlx_core.models.surgery import count_macs, count_params, resize_to_state_dict

ALL = {"segmentation": 5, "depth": 1, "normals": 3}
SUBSETS = [dict(c) for r in (1, 2, 3) for c in itertools.combinations(ALL.items(), r)]
@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # tiny convs on a shared 2-core machine run many times faster on one thread than on two busy ones
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = {"segnet_mtan": {"width": 0.0625}, "deeplab_resnet34": {"width": 0.0625, "head_hidden": 8}}


def tiny(arch: str, tasks: dict[str, int] = ALL, **over: object) -> nn.Module:
    torch.manual_seed(0)
    return build_model(arch, tasks, **{**TINY[arch], **over}).eval()


def test_unknown_arch_error_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="valid models: segnet_mtan, deeplab_resnet34"):
        build_model("resnet50", ALL)


@pytest.mark.parametrize("bad", [{}, {"edges": 2}, {"depth": 2}, {"normals": 1}, {"segmentation": 0}])
def test_invalid_task_channels_are_rejected(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="task"):
        build_model("segnet_mtan", bad, width=0.0625)


@pytest.mark.parametrize(("arch", "size"), [("segnet_mtan", (32, 64)), ("deeplab_resnet34", (48, 64)),
                                            ("deeplab_resnet34", (50, 70))])
@pytest.mark.parametrize("tasks", SUBSETS, ids=lambda t: "+".join(t))
def test_forward_returns_every_task_at_input_size(arch: str, size: tuple[int, int], tasks: dict[str, int]) -> None:
    model = tiny(arch, tasks)
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert list(out) == [t for t in ALL if t in tasks]
    for t, c in tasks.items():
        assert out[t].shape == (2, c, *size)


def test_segnet_rejects_size_not_divisible_by_32() -> None:
    with pytest.raises(ValueError, match="divisible by 32"):
        tiny("segnet_mtan")(torch.rand(1, 3, 50, 70))


@pytest.mark.parametrize("arch", list(MODELS))
def test_normals_are_unit_vectors(arch: str) -> None:
    with torch.no_grad():
        n = tiny(arch)(torch.rand(2, 3, 32, 32))["normals"]
    torch.testing.assert_close(n.norm(dim=1), torch.ones(2, 32, 32))


def _layer_output_size(model: nn.Module, size: tuple[int, int]) -> tuple[int, ...]:
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(model.default_gradcam_layer).register_forward_hook(
        lambda _m, _i, o: seen.append(o))
    try:
        with torch.no_grad():
            model(torch.rand(1, 3, *size))
    finally:
        handle.remove()
    assert len(seen) == 1
    return tuple(seen[0].shape[-2:])


def test_segnet_gradcam_layer_is_at_one_sixteenth_resolution() -> None:
    assert _layer_output_size(tiny("segnet_mtan"), (64, 96)) == (4, 6)


@pytest.mark.parametrize(("size", "expected"), [((65, 97), (9, 13)), ((64, 96), (9, 13)), ((50, 70), (7, 9))])
def test_deeplab_gradcam_layer_has_output_stride_8(size: tuple[int, int], expected: tuple[int, int]) -> None:
    # stride 8 with ceil-mode pooling: (H - 1) / 8 + 1 rows for H = 8k + 1 (the reference's 321 crops -> 41)
    assert _layer_output_size(tiny("deeplab_resnet34"), size) == expected


def test_default_gradcam_layers_are_the_documented_modules() -> None:
    assert tiny("segnet_mtan").default_gradcam_layer == "conv_block_enc.4"
    assert tiny("deeplab_resnet34").default_gradcam_layer == "backbone.blocks.3.2.conv2"


@pytest.mark.parametrize("arch", list(MODELS))
def test_gradcam_layer_output_is_not_modified_in_place(arch: str) -> None:
    model = tiny(arch).train()
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    handle = model.get_submodule(model.default_gradcam_layer).register_forward_hook(
        lambda _m, _i, o: kept.append((o, o.detach().clone())))
    out = model(torch.rand(2, 3, 64, 64))
    sum(v.sum() for v in out.values()).backward()
    handle.remove()
    assert torch.equal(kept[0][0], kept[0][1])


def test_deeplab_backbone_output_matches_reference_grid() -> None:
    model = tiny("deeplab_resnet34")
    with torch.no_grad():
        feats = model.backbone(torch.rand(1, 3, 321, 321))
    assert feats.shape == (1, 32, 41, 41)


@pytest.mark.parametrize("arch", list(MODELS))
def test_arch_config_rebuilds_the_same_architecture(arch: str) -> None:
    model = tiny(arch, {"segmentation": 7, "depth": 1})
    config = json.loads(json.dumps(model.arch_config))
    assert config["arch"] == arch
    rebuilt = build_model(**config).eval()
    assert str(rebuilt) == str(model)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 32, 64)
    with torch.no_grad():
        a, b = model(x), rebuilt(x)
    assert all(torch.equal(a[t], b[t]) for t in a)


@pytest.mark.parametrize("arch", list(MODELS))
def test_module_owner_splits_parameters_into_shared_and_tasks(arch: str) -> None:
    model = tiny(arch)
    groups = [model.shared_parameters()] + [model.task_parameters(t) for t in ALL]
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert model.module_owner("heads.depth.0") == "depth"
    assert model.module_owner(model.default_gradcam_layer) == "shared"
    if arch == "segnet_mtan":
        assert model.module_owner("encoder_att.normals.3.0") == "normals"
        assert model.module_owner("decoder_block_att.2.0") == "shared"


# --- full-width parameter counts, derived by hand -------------------------------------------------------------


def _cbr(a: int, b: int) -> int:  # conv3x3 with bias + BN
    return 9 * a * b + b + 2 * b


def _att(a: int, b: int, c: int) -> int:  # 1x1 conv + BN + 1x1 conv + BN
    return a * b + 3 * b + b * c + 3 * c


def segnet_mtan_params(classes: Sequence[int]) -> int:
    f = [64, 128, 256, 512, 512]
    encoder = _cbr(3, 64) + sum(_cbr(f[i], f[i + 1]) for i in range(4))
    encoder += _cbr(64, 64) + _cbr(128, 128) + 2 * (_cbr(256, 256) + _cbr(512, 512) + _cbr(512, 512))
    decoder = _cbr(64, 64) + sum(_cbr(f[i + 1], f[i]) for i in range(4))
    decoder += _cbr(64, 64) + _cbr(64, 64) + 2 * (_cbr(128, 128) + _cbr(256, 256) + _cbr(512, 512))
    block_att = sum(_cbr(f[i], f[i + 1]) for i in range(4)) + _cbr(512, 512)
    block_att += _cbr(64, 64) + sum(_cbr(f[i + 1], f[i]) for i in range(3)) + _cbr(512, 512)
    per_task = _att(64, 64, 64) + sum(_att(2 * f[i], f[i], f[i]) for i in range(1, 5))
    per_task += _att(128, 64, 64) + sum(_att(f[i] + f[i - 1], f[i - 1], f[i - 1]) for i in range(1, 5))
    heads = sum(9 * 64 * 64 + 64 + 64 * c + c for c in classes)
    return encoder + decoder + block_att + len(classes) * per_task + heads


def deeplab_params(classes: Sequence[int]) -> int:
    backbone = 21_797_672 - (512 * 1000 + 1000)  # torchvision ResNet-34 without its fc layer
    branch = 512 * 1024 * 9 + 1024 + 1024 * 1024 + 1024
    return backbone + sum(4 * (branch + 1024 * c + c) for c in classes)


@pytest.mark.parametrize(("tasks", "expected"), [
    ({"segmentation": 13, "depth": 1, "normals": 3}, 44_229_073),
    ({"segmentation": 7, "depth": 1}, 41_206_984),
])
def test_segnet_mtan_full_width_parameter_count_matches_hand_formula(tasks: dict[str, int], expected: int) -> None:
    assert segnet_mtan_params(list(tasks.values())) == expected
    with torch.device("meta"):
        model = build_model("segnet_mtan", tasks)
    assert count_params(model) == expected


@pytest.mark.parametrize(("tasks", "expected"), [
    ({"segmentation": 13, "depth": 1, "normals": 3}, 90_584_964),
    ({"segmentation": 7, "depth": 1}, 67_471_200),
])
def test_deeplab_full_width_parameter_count_matches_hand_formula(tasks: dict[str, int], expected: int) -> None:
    assert deeplab_params(list(tasks.values())) == expected
    with torch.device("meta"):
        model = build_model("deeplab_resnet34", tasks)
    assert count_params(model) == expected


# --- surgery ---------------------------------------------------------------------------------------------------

# Channel groups removed by hand at width 0.125 (SegNet f = 8, 16, 32, 64, 64; DeepLab 8, 16, 32, 64; heads 8):
# (group size, dropped channels, layers that produce the group, layers that read it as their first inputs)
PRUNE_PLANS: dict[str, list[tuple[int, list[int], list[str], list[str]]]] = {
    "segnet_mtan": [
        (32, [1, 5], ["conv_block_enc.2.0.0", "conv_block_enc.2.0.1"], ["conv_block_enc.2.1.0"]),
        # encoder stage 1's first conv feeds its conv block and the first half of every task's attention concat
        (16, [3], ["encoder_block.1.0", "encoder_block.1.1"],
         ["conv_block_enc.1.0.0"] + [f"encoder_att.{t}.1.0" for t in ALL]),
        (32, [0], ["encoder_att.depth.2.0", "encoder_att.depth.2.1"], ["encoder_att.depth.2.3"]),
        (8, [2, 4], ["heads.normals.0"], ["heads.normals.1"]),
    ],
    "deeplab_resnet34": [
        # a stage-0 channel runs through the stem and all three residual sums of stage 0
        (8, [6], ["backbone.conv1", "backbone.bn1"]
         + [f"backbone.blocks.0.{b}.{n}" for b in range(3) for n in ("conv2", "bn2")],
         [f"backbone.blocks.0.{b}.conv1" for b in range(3)]
         + ["backbone.blocks.1.0.conv1", "backbone.blocks.1.0.downsample.0"]),
        (32, [0, 31], ["backbone.blocks.2.1.conv1", "backbone.blocks.2.1.bn1"], ["backbone.blocks.2.1.conv2"]),
        (8, [3], ["heads.segmentation.2.conv1"], ["heads.segmentation.2.conv2"]),
    ],
}


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)


def _silence(model: nn.Module, plan: list[tuple[int, list[int], list[str], list[str]]]) -> None:
    """Zero the dropped channels' weights and biases, so that removing them changes nothing."""
    with torch.no_grad():
        for _, drop, producers, _ in plan:
            for name in producers:
                m = model.get_submodule(name)
                m.weight[drop] = 0
                if m.bias is not None:
                    m.bias[drop] = 0


def _shrink(model: nn.Module, plan: list[tuple[int, list[int], list[str], list[str]]]) -> None:
    """Physically remove the dropped channels (new, smaller modules)."""
    for n, drop, producers, consumers in plan:
        keep = torch.tensor([i for i in range(n) if i not in drop])
        for name in producers:
            m = model.get_submodule(name)
            if isinstance(m, nn.BatchNorm2d):
                new: nn.Module = nn.BatchNorm2d(len(keep)).eval()
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    getattr(new, attr).data = getattr(m, attr).data[keep].clone()
            else:
                new = nn.Conv2d(m.in_channels, len(keep), m.kernel_size, m.stride, m.padding, m.dilation,
                                bias=m.bias is not None)
                new.weight.data = m.weight.data[keep].clone()
                if m.bias is not None:
                    new.bias.data = m.bias.data[keep].clone()
            _replace(model, name, new)
        for name in consumers:
            m = model.get_submodule(name)
            cols = torch.cat([keep, torch.arange(n, m.in_channels)])
            new = nn.Conv2d(len(cols), m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                            bias=m.bias is not None)
            new.weight.data = m.weight.data[:, cols].clone()
            if m.bias is not None:
                new.bias.data = m.bias.data.clone()
            _replace(model, name, new)


@pytest.mark.parametrize("arch", list(MODELS))
def test_resize_to_state_dict_rebuilds_hand_pruned_model(arch: str, tmp_path: Path) -> None:
    model = tiny(arch, width=0.125)
    x = torch.rand(2, 3, 32, 64)
    _silence(model, PRUNE_PLANS[arch])
    with torch.no_grad():
        dense = model(x)
    before = count_params(model), count_macs(model, (3, 32, 64))
    _shrink(model, PRUNE_PLANS[arch])
    model.eval()
    with torch.no_grad():
        pruned = model(x)
    for t in dense:  # the removed channels were exactly zero, so the forward must not notice
        torch.testing.assert_close(pruned[t], dense[t], rtol=1e-4, atol=1e-4)
    assert count_params(model) < before[0]
    assert count_macs(model, (3, 32, 64)) < before[1]
    torch.save({"arch_config": model.arch_config, "state_dict": model.state_dict()}, tmp_path / "ckpt.pt")

    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    rebuilt = resize_to_state_dict(build_model(**ckpt["arch_config"]), ckpt["state_dict"])
    rebuilt.load_state_dict(ckpt["state_dict"])
    rebuilt.eval()
    with torch.no_grad():
        again = rebuilt(x)
    assert all(torch.equal(again[t], pruned[t]) for t in pruned)
    assert count_params(rebuilt) == count_params(model)


def test_count_macs_matches_hand_count() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 2, 1, groups=2), nn.Flatten(),
                          nn.Linear(2 * 8 * 8, 5))
    expected = 8 * 8 * 4 * 3 * 9 + 8 * 8 * 2 * 2 + 5 * 128
    assert count_macs(model, (3, 8, 8)) == expected == 7808
    assert count_params(model) == (4 * 27 + 4) + (2 * 2 + 2) + (128 * 5 + 5)
