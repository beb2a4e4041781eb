"""Registered Grad-CAM layers: a list per architecture, and every listed layer resolves and explains."""

from __future__ import annotations

import pytest
import torch

from mtlx_core.explain.gradcam import explain, resolve_layer
from mtlx_core.models import MODELS, build_model
from mtlx_core.models.layers import layer_label, layer_labels, registered_layers, resolve_layer_name
from mtlx_core.tasks import DepthTask, NormalsTask, SegmentationTask

TASKS = {"segmentation": SegmentationTask(tuple(f"c{i}" for i in range(7))), "depth": DepthTask(),
         "normals": NormalsTask()}


def tiny(arch: str) -> torch.nn.Module:
    kwargs = {"head_hidden": 8} if arch == "deeplab_resnet34" else {}
    torch.manual_seed(0)
    return build_model(arch, {"segmentation": 7, "depth": 1, "normals": 3}, width=0.0625, **kwargs).eval()


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_each_architecture_registers_layers_with_d11_first(arch: str) -> None:
    model = tiny(arch)
    layers = registered_layers(model)
    assert len(layers) >= 3
    assert next(iter(layers.values())) == model.default_gradcam_layer
    assert layer_labels(arch) == list(layers)


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_every_registered_layer_resolves_runs_once_and_explains(arch: str) -> None:
    model = tiny(arch)
    x = torch.rand(1, 3, 32, 64)
    for label in registered_layers(model):
        for name, task in TASKS.items():
            path, module = resolve_layer(model, label, name)
            assert layer_label(model, path) == label
            assert layer_label(arch, path) == label
            calls = []
            h = module.register_forward_hook(lambda *_a, calls=calls: calls.append(1))
            with torch.no_grad():
                model(x)
            h.remove()
            assert len(calls) == 1, f"{label} ({path}) runs {len(calls)} times per forward"
            exps = explain(model, x, task, label)
            assert exps
            assert all(e.layer == path for e in exps)


def test_per_task_layers_need_the_task_and_unknown_layers_list_the_registered_ones() -> None:
    model = tiny("segnet_mtan")
    assert resolve_layer_name(model, "task_att_dec2", "depth") == "decoder_att.depth.2"
    with pytest.raises(ValueError, match="per task"):
        resolve_layer_name(model, "task_att_dec2")
    with pytest.raises(ValueError, match="registered layers: enc_bottleneck, dec_stage3"):
        resolve_layer(model, "no_such_layer", "depth")
    assert resolve_layer_name(model, "d11") == resolve_layer_name(model, None) == "conv_block_enc.4"
    with pytest.raises(ValueError, match="valid models"):
        layer_labels("resnet50")


def test_primary_layers_resolve_arm_task_then_arm_then_arch_task_then_arch() -> None:
    from mtlx_core.live import store_layer
    from mtlx_core.precompute.presets import ExplainSettings

    s = ExplainSettings(layer="d11", primary_layers=(("segnet_mtan", "dec_stage2"), ("segnet_mtan:depth", "dec_stage1"),
                                                     ("arm1", "dec_stage3"), ("arm1:normals", "head_conv")))
    assert s.primary_layer("segnet_mtan", "segmentation") == "dec_stage2"
    assert s.primary_layer("segnet_mtan", "depth") == "dec_stage1"
    assert s.primary_layer("segnet_mtan", "depth", "arm1") == "dec_stage3"
    assert s.primary_layer("segnet_mtan", "normals", "arm1") == "head_conv"
    assert s.primary_layer("deeplab_resnet34", "normals", "arm2") == "d11"
    recorded = s.key_fields()  # what the store's meta holds (JSON lists), as the Live page reads it
    for arch, task, arm in [("segnet_mtan", "depth", None), ("segnet_mtan", "normals", "arm1"),
                            ("deeplab_resnet34", "normals", "arm2")]:
        assert store_layer(recorded, arch, task, arm) == s.primary_layer(arch, task, arm)


def test_a_tasks_primary_layer_is_not_repeated_among_its_ablation_layers() -> None:
    from mtlx_core.precompute.explainer import layer_plan
    from mtlx_core.precompute.presets import ExplainSettings

    model = tiny("segnet_mtan")
    s = ExplainSettings(primary_layers=(("segnet_mtan:depth", "dec_stage2"),), ablation_layers=("dec_stage2",
                                                                                                "head_conv"))
    plan = layer_plan(model, ["segmentation", "depth"], s)
    assert plan.primary == {"segmentation": "enc_bottleneck", "depth": "dec_stage2"}
    assert plan.ablation == {"segmentation": ["dec_stage2", "head_conv"], "depth": ["head_conv"]}
    with pytest.raises(ValueError, match="unknown Grad-CAM layer"):
        layer_plan(model, ["depth"], ExplainSettings(primary_layers=(("segnet_mtan", "nope"),)))
