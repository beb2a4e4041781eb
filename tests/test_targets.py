"""Explanation targets, Grad-CAM objectives and IROF scalars of the three tasks (decisions D12-D17)."""

from __future__ import annotations

import math

import pytest
import torch

from mtlx_core.tasks import DepthTask, NormalsTask, SegmentationTask
from mtlx_core.tasks.normals import octant_index, octant_name, octant_signs

CLASSES = ("floor", "wall", "ceiling", "box")


def seg_logits(labels: torch.Tensor, n_classes: int = 4) -> torch.Tensor:
    """Logits ``(C, H, W)`` whose argmax is ``labels``; logit = 2 + class index on the predicted class."""
    logits = torch.zeros(n_classes, *labels.shape)
    logits.scatter_(0, labels[None], (2.0 + labels.float())[None])
    return logits


def test_segmentation_targets_are_the_classes_present_with_their_pixels() -> None:
    labels = torch.tensor([[0, 0, 2], [2, 2, 0]])
    targets = SegmentationTask(CLASSES).explanation_targets(seg_logits(labels))
    assert [(t.target_id, t.name, t.n_pixels) for t in targets] == [(0, "floor", 3), (2, "ceiling", 3)]
    assert torch.equal(targets[1].mask, labels == 2)
    assert all(t.task == "segmentation" and t.rule == "class" for t in targets)


def test_segmentation_target_of_an_absent_class_is_not_produced() -> None:
    targets = SegmentationTask(CLASSES).explanation_targets(seg_logits(torch.zeros(2, 2, dtype=torch.long)))
    assert [t.name for t in targets] == ["floor"]


def test_segmentation_objective_is_the_sum_of_the_class_logit_over_its_pixels() -> None:
    task = SegmentationTask(CLASSES)
    logits = torch.randn(4, 3, 5)
    target = task.explanation_targets(logits)[0]
    expected = logits[target.target_id][logits.argmax(0) == target.target_id].sum()
    assert torch.allclose(task.gradcam_objective(logits, target), expected)


def test_segmentation_irof_scalar_is_the_mean_class_probability_over_the_clean_pixels() -> None:
    task = SegmentationTask(CLASSES)
    logits = torch.randn(1, 4, 3, 5)
    mask = torch.zeros(1, 3, 5, dtype=torch.bool)
    mask[0, :2, 1:3] = True
    score = task.perturbation_score(logits, logits, mask, torch.tensor([3]))
    assert torch.allclose(score, torch.softmax(logits, 1)[0, 3][mask[0]].mean()[None])


def test_depth_equal_width_bins_partition_the_normalised_clean_depth() -> None:
    depth = torch.tensor([[[1.0, 1.5, 2.0, 3.0, 5.0]]])  # normalised: 0, .125, .25, .5, 1
    targets = DepthTask().explanation_targets(depth)
    assert [(t.target_id, t.name) for t in targets] == [
        (0, "bin 0 [0.0, 0.2)"), (1, "bin 1 [0.2, 0.4)"), (2, "bin 2 [0.4, 0.6)"), (4, "bin 4 [0.8, 1.0]")]
    assert [t.mask[0].nonzero().flatten().tolist() for t in targets] == [[0, 1], [2], [3], [4]]
    assert targets[2].edges == pytest.approx((2.6, 3.4))


def test_depth_empty_bins_are_skipped_and_a_constant_depth_is_one_bin() -> None:
    targets = DepthTask().explanation_targets(torch.full((1, 3, 3), 2.5))
    assert [(t.target_id, t.n_pixels) for t in targets] == [(0, 9)]


def test_depth_empirical_quantile_bins_hold_a_fifth_of_the_pixels_each() -> None:
    depth = torch.arange(20.0).view(1, 4, 5) ** 2
    targets = DepthTask(bins="empirical_quantile").explanation_targets(depth)
    assert [t.n_pixels for t in targets] == [4, 4, 4, 4, 4]
    assert targets[2].name == "bin 2 [p40, p60)"
    assert targets[2].rule == "empirical_quantile"


def test_depth_bin_mode_must_be_known() -> None:
    with pytest.raises(ValueError, match="valid modes: equal_width, empirical_quantile"):
        DepthTask(bins="quartiles")


def test_depth_objective_and_irof_scalar() -> None:
    task = DepthTask()
    depth = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    target = task.explanation_targets(depth)[-1]  # bin 4: the pixel with depth 4
    assert float(task.gradcam_objective(depth, target)) == 4.0
    masks = torch.ones(2, 2, 2, dtype=torch.bool)
    perturbed = torch.stack([depth, depth * 1.5])  # relative error 0 and 0.5 everywhere
    scores = task.perturbation_score(perturbed, depth[None].expand(2, -1, -1, -1), masks, torch.tensor([0, 0]))
    assert scores.tolist() == pytest.approx([1.0, 0.5])


def test_depth_irof_relative_error_is_clipped_at_one() -> None:
    task = DepthTask()
    clean = torch.tensor([[[[1.0, 0.0]]]])
    scores = task.perturbation_score(clean * 10 + 1, clean, torch.ones(1, 1, 2, dtype=torch.bool), torch.tensor([0]))
    assert scores.tolist() == pytest.approx([0.0])


def test_octant_ids_follow_the_authors_order_with_sign_triples() -> None:
    assert [octant_name(o) for o in range(8)] == [
        "(-,-,-)", "(-,+,-)", "(+,-,-)", "(+,+,-)", "(-,-,+)", "(-,+,+)", "(+,-,+)", "(+,+,+)"]
    assert octant_signs(6) == (1, -1, 1)
    normals = torch.tensor([[0.5, -0.5, 0.0], [-0.5, 0.5, 0.0], [0.7, 0.7, -1.0]]).view(3, 1, 3)  # rows x, y, z
    assert octant_index(normals)[0].tolist() == [6, 5, 0]  # a zero component counts as "-" (threshold 0)


def test_normals_targets_skip_empty_octants() -> None:
    n = torch.tensor([[1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]).view(3, 1, 2) / math.sqrt(3)
    targets = NormalsTask().explanation_targets(n)
    assert [(t.target_id, t.name, t.n_pixels) for t in targets] == [(6, "(+,-,+)", 1), (7, "(+,+,+)", 1)]


def test_normals_objective_is_the_sum_of_projections_on_the_octant_direction() -> None:
    n = torch.nn.functional.normalize(torch.randn(3, 4, 4), dim=0)
    task = NormalsTask()
    for t in task.explanation_targets(n):
        s = torch.tensor(octant_signs(t.target_id), dtype=torch.float32) / math.sqrt(3)
        expected = (n * s.view(3, 1, 1)).sum(0)[t.mask].sum()
        assert torch.allclose(task.gradcam_objective(n, t), expected, atol=1e-6)


def test_normals_irof_scalar_maps_cosine_to_unit_interval() -> None:
    clean = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(3, 3, 1, 1)
    pert = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]).view(3, 3, 1, 1)
    scores = NormalsTask().perturbation_score(pert, clean, torch.ones(3, 1, 1, dtype=torch.bool), torch.zeros(3).long())
    assert scores.tolist() == pytest.approx([1.0, 0.5, 0.0])


def test_irof_scalar_of_an_empty_pixel_set_is_nan() -> None:
    pred = torch.rand(1, 1, 2, 2)
    score = DepthTask().perturbation_score(pred, pred, torch.zeros(1, 2, 2, dtype=torch.bool), torch.tensor([0]))
    assert torch.isnan(score).all()
