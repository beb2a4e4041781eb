"""Sanity checks (``mtlx_core.explain.sanity``) on models whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _explain_models import RegionModel, TinyMTL, photos, red_square_image, single_thread, tasks_for  # noqa: F401
from torch import nn

from mtlx_core.explain.explainers import get_explainer
from mtlx_core.explain.sanity import (
    SanitySettings,
    cascade_order,
    discrete_entropy,
    emprt,
    head_randomisation,
    model_randomisation,
    noise_floor,
    random_target_check,
    reinitialise,
)

SIZE = (32, 48)


class IgnoresInput(nn.Module):
    """Its explained layer ``body`` sees the input, but every output is its head's bias: ``head(0 * features)``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.heads = nn.ModuleDict({"segmentation": nn.Conv2d(4, 5, 1), "depth": nn.Conv2d(4, 1, 1),
                                    "normals": nn.Conv2d(4, 3, 1)})
        self.default_gradcam_layer = "body"

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = 0.0 * self.body(x)
        raw = self.heads["normals"](f)
        return {"segmentation": self.heads["segmentation"](f), "depth": 2.0 + self.heads["depth"](f),
                "normals": raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)}


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.stack(photos(SIZE)[:2])


def test_cascade_starts_at_the_task_head_and_skips_the_other_tasks_modules(batch: torch.Tensor) -> None:
    order = cascade_order(TinyMTL(), batch, "depth")
    assert order == ["heads.depth", "body.2.1", "body.2.0", "body.1.1", "body.1.0", "body.0.1", "body.0.0"]


@pytest.mark.parametrize("name", ["gradcam", "scorecam"])
def test_a_model_whose_output_ignores_its_input_fails_the_randomisation_check(name: str,
                                                                              batch: torch.Tensor) -> None:
    result = model_randomisation(IgnoresInput(), batch, tasks_for()["segmentation"], get_explainer(name, k=4)
                                 if name == "scorecam" else get_explainer(name))
    assert not result.passed
    if name == "gradcam":  # no gradient reaches the layer: nothing to explain
        assert result.n_zero == result.n_maps
        assert result.reason == "every original map is all zero"
    else:  # uniform Score-CAM weights: the map is the input's structure, untouched by the head's randomisation
        assert result.modules[0] == ("heads.segmentation",)
        assert result.steps[0].identical
        assert result.steps[0].mean_spearman == pytest.approx(1.0)


def test_randomisation_changes_the_maps_of_a_model_that_uses_its_input_and_leaves_the_model_as_it_was(
        batch: torch.Tensor) -> None:
    model = TinyMTL()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = model_randomisation(model, batch, tasks_for()["segmentation"], get_explainer("gradcam"),
                                 settings=SanitySettings(max_steps=3))
    assert len(result.steps) == 3
    assert result.modules[0][0] == "heads.segmentation"
    assert sum(len(g) for g in result.modules) == 7
    assert not any(s.identical for s in result.steps)
    assert len(result.emprt) == result.n_maps
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_randomising_one_head_of_a_model_with_disjoint_heads_leaves_the_other_tasks_maps_bit_identical(
        batch: torch.Tensor) -> None:
    checks = head_randomisation(TinyMTL(), batch, tasks_for(), "depth", get_explainer("gradcam"))
    assert checks["segmentation"].identical
    assert checks["normals"].identical
    assert checks["segmentation"].mean_spearman == pytest.approx(1.0)
    assert not checks["depth"].identical


def test_head_scope_must_name_existing_modules() -> None:
    with pytest.raises(ValueError, match="valid scopes: head, task"):
        head_randomisation(TinyMTL(), torch.zeros(1, 3, *SIZE), tasks_for(), "depth", get_explainer("gradcam"),
                           scope="trunk")
    with pytest.raises(ValueError, match="no head modules for task 'edges'"):
        head_randomisation(TinyMTL(), torch.zeros(1, 3, *SIZE), tasks_for(), "edges", get_explainer("gradcam"))


def test_random_target_check_pairs_targets_of_the_same_image_and_sees_identical_maps_as_identical() -> None:
    model = RegionModel()  # every depth target depends on one scalar of one region: the same map for every bin
    images = torch.stack([red_square_image(seed=0), red_square_image(seed=1)])
    exps = get_explainer("gradcam").explain(model, images, tasks_for()["depth"])
    assert len({e.target_id for e in exps}) > 1
    check = random_target_check(exps, seed=3)
    pairs = check.label.split()
    assert len(pairs) == len(exps)
    for pair in pairs:
        image, targets = pair.split(":")
        a, b = targets.split(">")
        assert a != b
        assert {int(a), int(b)} <= {e.target_id for e in exps if e.image_index == int(image)}
    assert check.spearman == pytest.approx([1.0] * len(exps))
    assert random_target_check(exps, seed=3) == check


def test_noise_floor_without_noise_is_exactly_the_maps_and_with_noise_is_seeded(batch: torch.Tensor) -> None:
    model, task, gc = TinyMTL(), tasks_for()["depth"], get_explainer("gradcam")
    [still] = noise_floor(model, batch, task, gc, settings=SanitySettings(noise_sigma=0.0, n_noise=1))
    assert still.identical
    noisy = noise_floor(model, batch, task, gc, settings=SanitySettings(noise_sigma=0.05, n_noise=2))
    assert [d.identical for d in noisy] == [False, False]
    again = noise_floor(model, batch, task, gc, settings=SanitySettings(noise_sigma=0.05, n_noise=2))
    for a, b in zip(noisy, again, strict=True):
        np.testing.assert_array_equal(a.spearman, b.spearman)
    assert all(0.0 < d.mean_spearman < 1.0 for d in noisy)


@pytest.mark.parametrize("mode", ["keep", "reset", "recompute"])
def test_batchnorm_statistics_follow_the_recorded_setting(mode: str, batch: torch.Tensor) -> None:
    model = TinyMTL()
    bn = model.body[1][1]
    mean0 = bn.running_mean.clone()
    torch.manual_seed(0)
    reinitialise(model, ["body.1.0", "body.1.1"], mode, batch)
    assert torch.equal(bn.weight.detach(), torch.ones_like(bn.weight))  # the affine parameters are re-initialised
    if mode == "keep":
        assert torch.equal(bn.running_mean, mean0)
    elif mode == "reset":
        assert torch.equal(bn.running_mean, torch.zeros_like(mean0))
        assert torch.equal(bn.running_var, torch.ones_like(mean0))
    else:
        with torch.no_grad():
            pre = model.body[1][0](model.body[0](batch))
        torch.testing.assert_close(bn.running_mean, pre.mean(dim=(0, 2, 3)))
    assert not model.training


def test_sanity_settings_reject_unknown_bn_modes() -> None:
    with pytest.raises(ValueError, match="valid modes: keep, reset, recompute"):
        SanitySettings(bn_stats="freeze")


def test_emprt_uses_quantus_discrete_entropy_and_is_zero_for_unchanged_maps(batch: torch.Tensor) -> None:
    from quantus.functions.complexity_func import discrete_entropy as quantus_entropy

    exps = get_explainer("gradcam").explain(TinyMTL(), batch, tasks_for()["segmentation"])
    for e in exps:
        assert discrete_entropy(e.map_input, 100) == pytest.approx(quantus_entropy(a=e.map_input, x=e.map_input,
                                                                                   n_bins=100), abs=1e-12)
    rises = emprt(exps, exps, 100)
    assert [r == 0.0 for r in rises] == [not e.is_zero for e in exps]


def test_cascade_of_an_mtan_starts_at_the_explained_task_head_although_shared_modules_run_per_task() -> None:
    from mtlx_core.models import build_model

    torch.manual_seed(0)
    model = build_model("segnet_mtan", {"segmentation": 5, "depth": 1, "normals": 3}, width=0.125)
    order = cascade_order(model, torch.rand(1, 3, 64, 96), "depth")
    assert order[:2] == ["heads.depth.1", "heads.depth.0"]
    assert not [n for n in order if "segmentation" in n.split(".") or "normals" in n.split(".")]
    assert {n.split(".")[0] for n in order} >= {"encoder_block", "decoder_block", "encoder_att", "decoder_att"}
