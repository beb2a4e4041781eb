"""Losses and pooled metrics of the three tasks, against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mtlx_core.data.layout import get_dataset_spec
from mtlx_core.tasks import DepthTask, NormalsTask, SegmentationTask, build_tasks


def _logits_for(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits (1,C,H,W) whose argmax is ``labels`` (H,W)."""
    return torch.nn.functional.one_hot(labels, num_classes).permute(2, 0, 1).float().unsqueeze(0) * 5.0


def test_confusion_matrix_miou_and_pixel_accuracy_by_hand():
    task = SegmentationTask(("a", "b", "c"))
    metric = task.new_metric()
    gt = torch.tensor([[[0, 1], [1, -1]]])
    pred = _logits_for(torch.tensor([[0, 1], [0, 2]]), 3)
    metric.update(pred, gt)
    # M[gt, pred]: (0,0)=1, (1,1)=1, (1,0)=1; the ignored pixel is not counted; class c never appears.
    assert metric.matrix.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    out = metric.compute()
    # IoU_a = 1 / (1 + 2 - 1) = 0.5, IoU_b = 1 / (2 + 1 - 1) = 0.5, IoU_c undefined -> left out.
    assert out["miou"] == pytest.approx(0.5)
    assert out["pixel_acc"] == pytest.approx(2 / 3)


def test_confusion_matrix_pools_pixels_over_batches():
    task = SegmentationTask(("a", "b"))
    metric = task.new_metric()
    metric.update(_logits_for(torch.tensor([[0, 0]]), 2), torch.tensor([[[0, 1]]]))
    metric.update(_logits_for(torch.tensor([[1, 1, 1]]), 2), torch.tensor([[[1, 1, 0]]]))
    # pooled M = [[1, 1], [1, 2]]: IoU_a = 1/3, IoU_b = 2/4
    assert metric.compute()["miou"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert metric.compute()["pixel_acc"] == pytest.approx(3 / 5)


def test_segmentation_loss_is_cross_entropy_ignoring_minus_one():
    task = SegmentationTask(("a", "b"))
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    gt = torch.tensor([[[0, -1]]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert task.loss(logits, gt).item() == pytest.approx(expected)


def test_depth_errors_pooled_over_valid_pixels_by_hand():
    task = DepthTask()
    metric = task.new_metric()
    metric.update(torch.tensor([1.0, 2.0]).view(1, 1, 1, 2), torch.tensor([1.0, 4.0]).view(1, 1, 1, 2))
    metric.update(torch.tensor([3.0, 4.0]).view(1, 1, 1, 2), torch.tensor([0.0, 2.0]).view(1, 1, 1, 2))
    out = metric.compute()
    # valid pixels: (1 vs 1), (2 vs 4), (4 vs 2); the pixel with ground truth 0 is invalid.
    assert out["abs_err"] == pytest.approx((0 + 2 + 2) / 3)
    assert out["rel_err"] == pytest.approx((0 + 0.5 + 1.0) / 3)


def test_depth_loss_is_l1_on_valid_pixels():
    task = DepthTask()
    pred = torch.tensor([1.0, 5.0, 3.0]).view(1, 1, 1, 3)
    gt = torch.tensor([2.0, 0.0, 1.0]).view(1, 1, 1, 3)
    assert task.loss(pred, gt).item() == pytest.approx((1 + 2) / 2)


def _normals(vectors: list[list[float]]) -> torch.Tensor:
    return torch.tensor(vectors, dtype=torch.float32).T.reshape(1, 3, 1, len(vectors))


def test_normal_angles_by_hand():
    task = NormalsTask()
    metric = task.new_metric()
    s = 1 / math.sqrt(2)
    pred = _normals([[0, 0, 1], [1, 0, 0], [s, 0, s], [1, 0, 0]])
    gt = _normals([[0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 0]])  # last pixel invalid
    metric.update(pred, gt)
    out = metric.compute()
    assert out["mean_angle"] == pytest.approx((0 + 90 + 45) / 3, abs=1e-4)
    assert out["median_angle"] == pytest.approx(45, abs=1e-4)
    assert out["within_11.25"] == pytest.approx(1 / 3)
    assert out["within_22.5"] == pytest.approx(1 / 3)
    assert out["within_30"] == pytest.approx(1 / 3)


def test_normal_median_is_pooled_not_median_of_batch_medians():
    metric = NormalsTask().new_metric()
    z = [0, 0, 1]
    x = [1, 0, 0]
    metric.update(_normals([z, z, z]), _normals([z, z, z]))  # angles 0, 0, 0
    metric.update(_normals([x, x]), _normals([z, z]))  # angles 90, 90
    # pooled angles [0, 0, 0, 90, 90] -> median 0 (median of batch medians would be 45)
    assert metric.compute()["median_angle"] == pytest.approx(0.0, abs=1e-4)


def test_normals_loss_is_one_minus_mean_cosine_on_valid_pixels():
    task = NormalsTask()
    pred = _normals([[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    gt = _normals([[0, 0, 1], [0, 0, 1], [0, 0, 0]])
    assert task.loss(pred, gt).item() == pytest.approx(1 - (1 + 0) / 2)


def test_build_tasks_keeps_order_and_rejects_unknown_task():
    spec = get_dataset_spec("cityscapes")
    tasks = build_tasks(spec, ["depth", "segmentation"])
    assert list(tasks) == ["segmentation", "depth"]
    assert tasks["segmentation"].out_channels == 7
    assert tasks["depth"].kind == "inverse"
    with pytest.raises(ValueError, match="valid tasks: segmentation, depth"):
        build_tasks(spec, ["normals"])


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="valid datasets: nyuv2, cityscapes"):
        get_dataset_spec("kitti")
