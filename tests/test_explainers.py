"""The explainers (``mtlx_core.explain.explainers``) against their references and the shared contract.

References: pytorch-grad-cam's CAM classes on the same model, layer and target callables (its maps are compared at
the layer's resolution: its resize is made an identity and its double min-max undone by renormalising by the
max, as in tests/test_gradcam.py), its ``ScoreCAM`` restricted to the same K channels, and Captum's
``IntegratedGradients`` called directly for one target at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from _explain_models import (  # noqa: F401
    RegionModel,
    TinyMTL,
    photos,
    red_square_image,
    single_thread,
    tasks_for,
)

from mtlx_core.explain.explainers import EXPLAINERS, explain_all, explainer_names, get_explainer
from mtlx_core.explain.explainers.scorecam import top_channels
from mtlx_core.explain.gradcam import explain
from mtlx_core.tasks.base import ExplanationTarget

SIZE = (32, 48)
CAMS = ("gradcam", "gradcampp", "hirescam", "xgradcam", "layercam")
PGC_CLASS = {"gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus", "hirescam": "HiResCAM", "xgradcam": "XGradCAM",
             "layercam": "LayerCAM"}


class TaskOutput(torch.nn.Module):
    """The model's prediction of one task, as pytorch-grad-cam expects a single tensor."""

    def __init__(self, model: torch.nn.Module, task: str) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[self.task]


def objective_of(task: object, target: ExplanationTarget) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda out: task.gradcam_objective(out, target)  # type: ignore[attr-defined]


def topk_scorecam(k: int) -> type:
    """pytorch-grad-cam's ScoreCAM on each image's ``k`` channels of largest mean activation (its own code on
    the restricted activations)."""
    from pytorch_grad_cam import ScoreCAM

    class TopKScoreCAM(ScoreCAM):
        def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth):
            order = np.argsort(-activations.mean(axis=(2, 3)), axis=1, kind="stable")[:, :k]
            chosen = np.take_along_axis(activations, order[:, :, None, None], axis=1)
            return super().get_cam_image(input_tensor, target_layer, targets, chosen, grads, eigen_smooth)

    return TopKScoreCAM


def pgc_layer_map(cam_cls: type, model: torch.nn.Module, image: torch.Tensor, task_name: str, layer: str,
                  objective: Callable[[torch.Tensor], torch.Tensor], layer_size: tuple[int, ...]) -> np.ndarray:
    """pytorch-grad-cam's map of one target at the layer's resolution, renormalised by its max."""
    with cam_cls(TaskOutput(model, task_name), [model.get_submodule(layer)]) as cam:
        cam.get_target_width_height = lambda _x: (layer_size[1], layer_size[0])
        cam.batch_size = 16  # Score-CAM's rows per forward (ours is given the same)
        out = cam(image[None], targets=[objective])[0]
    return out / out.max() if out.max() > 0 else out


def demo_segnet(images: torch.Tensor) -> torch.nn.Module:
    """The demo-width (0.125) SegNet-MTAN, BatchNorm statistics of ``images`` (O(1) outputs)."""
    from mtlx_core.models import build_model

    torch.manual_seed(0)
    model = build_model("segnet_mtan", {"segmentation": 5, "depth": 1, "normals": 3}, width=0.125)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.stack(photos(SIZE)[:2])


# --- the registry ---------------------------------------------------------------------------------------------

def test_registry_names_every_explainer_of_the_issue_with_grad_cam_first() -> None:
    assert list(EXPLAINERS) == [*CAMS, "scorecam", "integrated_gradients"]
    assert explainer_names(["all"]) == list(EXPLAINERS)
    assert explainer_names(["hirescam,gradcam", "gradcam"]) == ["gradcam", "hirescam"]


def test_unknown_explainer_names_and_options_raise_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid explainers: gradcam, gradcampp"):
        get_explainer("gradcam_plus")
    with pytest.raises(ValueError, match=r"unknown explainer.*nope.*valid explainers: all, gradcam"):
        explainer_names(["gradcam", "nope"])
    with pytest.raises(ValueError, match="valid options: k, batch_size"):
        get_explainer("scorecam", K=3)
    with pytest.raises(ValueError, match="k >= 1"):
        get_explainer("scorecam", k=0)
    with pytest.raises(ValueError, match="valid approximations: gausslegendre"):
        get_explainer("integrated_gradients", approximation="simpson")


# --- the gradient CAMs: one forward, one batched backward, pytorch-grad-cam's maps ----------------------------

def test_the_gradcam_explainer_gives_the_existing_grad_cam_maps_bit_for_bit(batch: torch.Tensor) -> None:
    model = TinyMTL()
    for task in tasks_for().values():
        ref = explain(model, batch, task)
        via_registry = get_explainer("gradcam").explain(model, batch, task)
        shared = explain_all([get_explainer(n) for n in CAMS], model, batch, task)["gradcam"]
        for exps in (via_registry, shared):
            assert [(e.image_index, e.target_id) for e in exps] == [(e.image_index, e.target_id) for e in ref]
            for a, b in zip(exps, ref, strict=True):
                np.testing.assert_array_equal(a.map_layer, b.map_layer)
                np.testing.assert_array_equal(a.map_input, b.map_input)
                assert a.settings.to_dict() == b.settings.to_dict()


@pytest.mark.parametrize("name", CAMS)
def test_each_gradient_cam_uses_one_forward_and_one_batched_backward(name: str, batch: torch.Tensor,
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
    exps = get_explainer(name).explain(model, batch, tasks_for()["normals"])
    assert len(exps) > 2
    assert (forwards, calls) == ([1], [True])


def test_explain_all_shares_one_capture_between_the_gradient_cams(batch: torch.Tensor,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    model, task = TinyMTL(), tasks_for()["segmentation"]
    alone = {n: get_explainer(n).explain(model, batch, task) for n in CAMS}
    forwards: list[int] = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    shared = explain_all([get_explainer(n) for n in CAMS], model, batch, task)
    assert forwards == [1]
    assert list(shared) == list(CAMS)
    for n in CAMS:
        for a, b in zip(shared[n], alone[n], strict=True):
            np.testing.assert_array_equal(a.map_layer, b.map_layer)


@pytest.mark.parametrize("name", CAMS)
@pytest.mark.parametrize("task_name", ["segmentation", "depth", "normals"])
def test_gradient_cams_match_pytorch_grad_cam_on_a_tiny_model(name: str, task_name: str) -> None:
    import pytorch_grad_cam

    model, task = TinyMTL(), tasks_for()[task_name]
    image = photos(SIZE)[0]
    exps = get_explainer(name).explain(model, image[None], task)
    assert exps
    for e in exps:
        theirs = pgc_layer_map(getattr(pytorch_grad_cam, PGC_CLASS[name]), model, image, task_name, e.layer,
                               objective_of(task, e.target), e.map_layer.shape)
        np.testing.assert_allclose(e.map_layer, theirs, atol=1e-5, err_msg=f"{name} {e.target_name}")


@pytest.mark.parametrize("name", CAMS)
def test_gradient_cams_match_pytorch_grad_cam_on_the_demo_segnet_mtan(name: str) -> None:
    import pytorch_grad_cam

    size = (64, 96)
    image = photos(size)[0]
    model, task = demo_segnet(torch.stack(photos(size))), tasks_for()["segmentation"]
    exps = get_explainer(name).explain(model, image[None], task)
    assert exps
    assert exps[0].layer == model.default_gradcam_layer
    for e in exps:
        theirs = pgc_layer_map(getattr(pytorch_grad_cam, PGC_CLASS[name]), model, image, "segmentation", e.layer,
                               objective_of(task, e.target), e.map_layer.shape)
        np.testing.assert_allclose(e.map_layer, theirs, atol=1e-5, err_msg=f"{name} {e.target_name}")


# --- Score-CAM -------------------------------------------------------------------------------------------------

def test_score_cam_masks_the_k_channels_of_largest_mean_activation() -> None:
    acts = torch.zeros(2, 6, 3, 3)
    acts[0, [4, 1, 5]] = torch.tensor([3.0, 2.0, 1.0])[:, None, None]
    acts[1, 2, 0, 0] = 9.0  # mean 1
    acts[1, 0] = 0.5
    assert set(top_channels(acts, 3)[0].tolist()) == {1, 4, 5}
    assert set(top_channels(acts, 2)[1].tolist()) == {0, 2}
    assert top_channels(acts, 32).shape == (2, 6)


@pytest.mark.parametrize("task_name", ["segmentation", "depth", "normals"])
def test_score_cam_with_k_at_least_the_layer_width_matches_pytorch_grad_cam(task_name: str) -> None:
    from pytorch_grad_cam import ScoreCAM

    model, task = TinyMTL(), tasks_for()[task_name]  # body.1 has 16 channels
    image = photos(SIZE)[0]
    exps = get_explainer("scorecam", k=32, batch_size=16).explain(model, image[None], task)
    assert exps
    for e in exps:
        assert (e.settings.to_dict()["k"], e.settings.to_dict()["channels_masked"]) == (32, 16)
        theirs = pgc_layer_map(ScoreCAM, model, image, task_name, e.layer, objective_of(task, e.target),
                               e.map_layer.shape)
        np.testing.assert_allclose(e.map_layer, theirs, atol=1e-5, err_msg=e.target_name)


@pytest.mark.parametrize(("model_name", "k"), [("tiny", 5), ("segnet", 32)])
def test_score_cam_matches_pytorch_grad_cam_restricted_to_the_same_k_channels(model_name: str, k: int) -> None:
    size = SIZE if model_name == "tiny" else (64, 96)
    image = photos(size)[0]
    model = TinyMTL() if model_name == "tiny" else demo_segnet(torch.stack(photos(size)))
    task = tasks_for()["segmentation"]
    exps = get_explainer("scorecam", k=k, batch_size=16).explain(model, image[None], task)
    assert len(exps) >= 2
    for e in exps[:2]:  # the reference forwards k masked images per target
        assert e.settings.to_dict()["channels_masked"] == k
        theirs = pgc_layer_map(topk_scorecam(k), model, image, "segmentation", e.layer,
                               objective_of(task, e.target), e.map_layer.shape)
        np.testing.assert_allclose(e.map_layer, theirs, atol=1e-5, err_msg=e.target_name)


# --- Integrated Gradients --------------------------------------------------------------------------------------

@pytest.mark.parametrize("task_name", ["segmentation", "depth", "normals"])
def test_integrated_gradients_matches_captum_called_directly_for_each_target(task_name: str) -> None:
    from captum.attr import IntegratedGradients

    model, task = TinyMTL(), tasks_for()[task_name]
    image = photos(SIZE)[0]
    exps = get_explainer("integrated_gradients", n_steps=8, baseline=0.25).explain(model, image[None], task)
    assert exps
    for e in exps:
        def forward(x: torch.Tensor, t: ExplanationTarget = e.target) -> torch.Tensor:
            return torch.stack([task.gradcam_objective(p, t) for p in model(x)[task_name]])

        attr = IntegratedGradients(forward).attribute(image[None], baselines=0.25, n_steps=8,
                                                      method="gausslegendre")[0]
        raw = torch.relu(attr.detach().sum(0)).numpy()
        ref = (raw - raw.min()) / (raw.max() - raw.min())
        np.testing.assert_allclose(e.map_layer, ref, atol=1e-5, err_msg=e.target_name)
        np.testing.assert_array_equal(e.map_input, e.map_layer)
        assert e.layer == "input"
        record = e.settings.to_dict()
        assert (record["method"], record["baseline"], record["n_steps"], record["approximation"]) == (
            "integrated_gradients", 0.25, 8, "gausslegendre")


# --- the contract shared by every explainer --------------------------------------------------------------------

def test_every_explainer_explains_the_same_targets_with_normalised_maps_of_the_same_shapes(
        batch: torch.Tensor) -> None:
    model = TinyMTL()
    small = {"scorecam": {"k": 4}, "integrated_gradients": {"n_steps": 4}}
    for task in tasks_for().values():
        ref = explain(model, batch, task)
        for name in EXPLAINERS:
            exps = get_explainer(name, **small.get(name, {})).explain(model, batch, task)
            assert [(e.image_index, e.target_id) for e in exps] == [(e.image_index, e.target_id) for e in ref]
            for e, r in zip(exps, ref, strict=True):
                assert e.settings.to_dict()["method"] == name
                assert e.map_input.shape == SIZE
                assert e.map_layer.shape == (SIZE if name == "integrated_gradients" else r.map_layer.shape)
                assert e.map_input.dtype == np.float32
                assert np.isfinite(e.map_input).all()
                if e.is_zero:
                    assert e.map_layer.max() == 0.0
                else:
                    assert (e.map_layer.min(), e.map_layer.max()) == (0.0, pytest.approx(1.0))


@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_maps_of_an_image_do_not_depend_on_the_rest_of_the_batch(name: str, batch: torch.Tensor) -> None:
    model, task = TinyMTL(), tasks_for()["segmentation"]
    explainer = get_explainer(name, **({"n_steps": 4} if name == "integrated_gradients" else {}))
    together = [e for e in explainer.explain(model, batch, task) if e.image_index == 1]
    alone = explainer.explain(model, batch[1:], task)
    assert [e.target_id for e in together] == [e.target_id for e in alone]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a.map_layer, b.map_layer, atol=1e-5)


@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_every_explainer_is_zero_outside_the_only_region_the_output_depends_on(name: str) -> None:
    model, image = RegionModel(), red_square_image()[None]
    non_zero = 0
    for task in tasks_for().values():
        for e in get_explainer(name).explain(model, image, task):
            non_zero += not e.is_zero
            outside = e.map_layer.copy()  # the gate layer has the input's resolution
            outside[4:12, 4:12] = 0
            assert outside.max() == 0, (task.name, e.target_name)
    assert non_zero > 0


def test_explainers_reject_a_batch_that_is_not_four_dimensional() -> None:
    for name in EXPLAINERS:
        with pytest.raises(ValueError, match=r"images must be \(B, 3, H, W\)"):
            get_explainer(name).explain(TinyMTL(), photos(SIZE)[0], tasks_for()["depth"])
