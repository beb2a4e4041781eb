"""Batched Grad-CAM per task target (decisions D11-D15), checked against pytorch-grad-cam."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _explain_models import (  # noqa: F401
    RegionModel,
    TinyMTL,
    calibrated_study_model,
    photos,
    red_square_image,
    single_thread,
    tasks_for,
)

from mtlx_core.explain.gradcam import explain
from mtlx_core.tasks import SegmentationTask
from mtlx_core.tasks.base import ExplanationTarget

SIZE = (32, 48)


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.stack(photos(SIZE)[:2])


class RaisingTask(SegmentationTask):
    def gradcam_objective(self, pred: torch.Tensor, target: ExplanationTarget) -> torch.Tensor:
        raise RuntimeError("target failed")


def test_gradcam_removes_hooks_when_a_target_raises(batch: torch.Tensor) -> None:
    model = TinyMTL()
    layer = model.get_submodule(model.default_gradcam_layer)
    with pytest.raises(RuntimeError, match="target failed"):
        explain(model, batch, RaisingTask(tasks_for()["segmentation"].class_names))
    assert not layer._forward_hooks
    explain(model, batch, tasks_for()["depth"])
    assert not layer._forward_hooks


def test_gradcam_peaks_inside_the_only_region_the_output_depends_on() -> None:
    model, image = RegionModel(), red_square_image()[None]
    for task in tasks_for().values():
        maps = [e for e in explain(model, image, task) if not e.is_zero]
        assert maps, task.name
        for e in maps:
            r, c = np.unravel_index(np.argmax(e.map_input), e.map_input.shape)
            assert (4 <= r < 12, 4 <= c < 12) == (True, True), (task.name, e.target_name)
            outside = e.map_layer.copy()
            outside[4:12, 4:12] = 0
            assert outside.max() == 0


def test_gradcam_uses_one_forward_and_one_batched_backward(batch: torch.Tensor,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    model = TinyMTL()
    calls: list[bool] = []
    grad = torch.autograd.grad

    def counting_grad(*args: object, **kwargs: object) -> object:
        calls.append(bool(kwargs.get("is_grads_batched")))
        return grad(*args, **kwargs)

    forwards: list[int] = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    exps = explain(model, batch, tasks_for()["normals"])
    assert len(exps) > 2
    assert forwards == [1]
    assert calls == [True]


def test_gradcam_maps_of_an_image_do_not_depend_on_the_rest_of_the_batch(batch: torch.Tensor) -> None:
    model, task = TinyMTL(), tasks_for()["segmentation"]
    together = [e for e in explain(model, batch, task) if e.image_index == 1]
    alone = explain(model, batch[1:], task)
    assert [e.target_name for e in together] == [e.target_name for e in alone]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a.map_layer, b.map_layer, atol=1e-6)


def test_gradcam_maps_are_min_max_normalised_and_resized_to_the_input(batch: torch.Tensor) -> None:
    exps = explain(TinyMTL(), batch, tasks_for()["depth"])
    for e in exps:
        assert e.map_layer.shape == (SIZE[0] // 2, SIZE[1] // 2)
        assert e.map_input.shape == SIZE
        if not e.is_zero:
            assert e.map_layer.min() == 0.0
            assert e.map_layer.max() == pytest.approx(1.0)
        assert e.map_input.min() >= 0.0
        assert e.map_input.max() <= 1.0 + 1e-6
        assert e.layer == "body.1"
        assert e.settings.layer == "body.1"


def test_gradcam_of_an_absent_class_is_reported_as_an_all_zero_map(batch: torch.Tensor) -> None:
    task = tasks_for()["segmentation"]
    empty = ExplanationTarget("segmentation", 3, "box", torch.zeros(SIZE, dtype=torch.bool), "class")
    [e] = explain(TinyMTL(), batch[:1], task, targets=[[empty]])
    assert e.is_zero
    assert not np.isnan(e.map_input).any()
    assert e.map_input.max() == 0.0


def test_gradcam_layer_must_exist(batch: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="no layer 'nope'"):
        explain(TinyMTL(), batch, tasks_for()["depth"], layer="nope")


def _pgc_maps(model: torch.nn.Module, image: torch.Tensor, task_name: str, objective, layer_size=None) -> np.ndarray:
    """pytorch-grad-cam's map for one target, renormalised by its max (it divides by max + 1e-7)."""
    from pytorch_grad_cam import GradCAM

    class TaskOutput(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)[task_name]

    wrapper = TaskOutput()
    with GradCAM(wrapper, [model.get_submodule(model.default_gradcam_layer)]) as cam:
        if layer_size is not None:  # resize to the layer's own size = no resize (cv2 copies)
            cam.get_target_width_height = lambda _x: (layer_size[1], layer_size[0])
        out = cam(image[None], targets=[objective])[0]
    return out / out.max() if out.max() > 0 else out


@pytest.mark.parametrize("task_name", ["segmentation", "depth", "normals"])
def test_gradcam_matches_pytorch_grad_cam(task_name: str) -> None:
    """Layer-resolution maps agree up to float rounding (pytorch-grad-cam normalises by ``max - min + 1e-7``,
    so its map is renormalised by its max first). At input resolution ours is ``resize(minmax(cam))`` (D11),
    which must equal cv2's resize of our layer map; pytorch-grad-cam min-max normalises once more after
    resizing, so it must equal ``minmax`` of ours."""
    pytest.importorskip("pytorch_grad_cam")
    import cv2

    model, task = TinyMTL(), tasks_for()[task_name]
    image = photos(SIZE)[0]
    exps = explain(model, image[None], task)
    assert exps
    for e in exps:
        def objective(out: torch.Tensor, t: ExplanationTarget = e.target) -> torch.Tensor:
            return task.gradcam_objective(out, t)

        theirs_layer = _pgc_maps(model, image, task_name, objective, layer_size=e.map_layer.shape)
        np.testing.assert_allclose(e.map_layer, theirs_layer, atol=1e-5)
        np.testing.assert_allclose(e.map_input, cv2.resize(e.map_layer, SIZE[::-1]), atol=1e-5)
        theirs_input = _pgc_maps(model, image, task_name, objective)
        lo, hi = e.map_input.min(), e.map_input.max()
        np.testing.assert_allclose((e.map_input - lo) / (hi - lo), theirs_input, atol=1e-5)


def test_torch_bilinear_resize_equals_cv2_linear_resize() -> None:
    cv2 = pytest.importorskip("cv2")
    small = np.random.default_rng(0).random((6, 8)).astype(np.float32)
    ours = F.interpolate(torch.from_numpy(small)[None, None], size=(96, 128), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(ours[0, 0].numpy(), cv2.resize(small, (128, 96)), atol=1e-6)


class RaisingForward(TinyMTL):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.body(x)  # runs the hooked layer, then fails
        raise RuntimeError("forward failed")


def test_gradcam_removes_hooks_when_the_forward_raises(batch: torch.Tensor) -> None:
    model = RaisingForward()
    layer = model.get_submodule(model.default_gradcam_layer)
    with pytest.raises(RuntimeError, match="forward failed"):
        explain(model, batch, tasks_for()["depth"])
    assert not layer._forward_hooks


def test_gradcam_explains_exactly_the_non_empty_bins_and_octants_of_the_clean_prediction() -> None:
    model, image = RegionModel(), red_square_image()[None]
    with torch.no_grad():
        out = model(image)
    for name in ("depth", "normals"):
        task = tasks_for()[name]
        present = [t.target_id for t in task.explanation_targets(out[name][0])]
        exps = explain(model, image, task)
        assert [e.target_id for e in exps] == present
        assert all(e.target.n_pixels > 0 for e in exps)
    octants = {e.target_id for e in explain(model, image, tasks_for()["normals"])}
    assert octants == {4, 5, 6, 7}  # z = -0.1 + 0.2 * redness > 0 everywhere: the z < 0 octants are skipped


def test_gradcam_of_a_constant_image_gives_finite_maps_in_the_unit_interval() -> None:
    image = torch.full((1, 3, *SIZE), 0.5)
    for task in tasks_for().values():
        exps = explain(TinyMTL(), image, task)
        assert exps, task.name
        for e in exps:
            assert np.isfinite(e.map_input).all()
            assert np.isfinite(e.map_layer).all()
            assert e.map_input.min() >= 0.0
            assert e.map_input.max() <= 1.0 + 1e-6
            assert e.is_zero == (e.map_layer.max() == 0.0)


@pytest.mark.parametrize("arch", ["segnet_mtan", "deeplab_resnet34"])
def test_gradcam_matches_pytorch_grad_cam_on_the_study_architectures_at_their_default_layer(arch: str) -> None:
    pytest.importorskip("pytorch_grad_cam")
    size = (64, 64)
    image = photos(size)[0]
    model = calibrated_study_model(arch, torch.stack(photos(size)))
    for task_name, task in tasks_for().items():
        exps = explain(model, image[None], task)
        assert exps
        assert exps[0].layer == model.default_gradcam_layer
        for e in exps:
            def objective(out: torch.Tensor, t: ExplanationTarget = e.target, task: object = task) -> torch.Tensor:
                return task.gradcam_objective(out, t)

            theirs = _pgc_maps(model, image, task_name, objective, layer_size=e.map_layer.shape)
            np.testing.assert_allclose(e.map_layer, theirs, atol=1e-5, err_msg=f"{arch} {task_name} {e.target_name}")
