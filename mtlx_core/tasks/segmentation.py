"""Semantic segmentation: cross-entropy ignoring -1, confusion-matrix mIoU and pixel accuracy."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from mtlx_core.tasks.base import (
    DEFAULT_SCORE_OPTIONS,
    ExplanationTarget,
    MetricAccumulator,
    ScoreOptions,
    Task,
    masked_mean,
)


class ConfusionMatrix(MetricAccumulator):
    """Confusion matrix ``M[gt, pred]`` over all labelled pixels of a split."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        labels = pred.argmax(dim=1) if pred.dim() == 4 else pred
        gt = target.reshape(-1).long().cpu()
        pr = labels.reshape(-1).long().cpu()
        keep = (gt >= 0) & (gt < self.num_classes)
        idx = gt[keep] * self.num_classes + pr[keep]
        counts = torch.bincount(idx, minlength=self.num_classes**2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes).numpy()

    def iou_per_class(self) -> np.ndarray:
        """IoU of each class; NaN for a class absent from both ground truth and prediction."""
        m = self.matrix.astype(np.float64)
        inter = np.diag(m)
        union = m.sum(axis=0) + m.sum(axis=1) - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)

    def compute(self) -> dict[str, float]:
        total = self.matrix.sum()
        iou = self.iou_per_class()
        miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
        acc = float(np.trace(self.matrix) / total) if total else float("nan")
        return {"miou": miou, "pixel_acc": acc}


class SegmentationTask(Task):
    """Per-pixel classification into ``len(class_names)`` classes."""

    name = "segmentation"
    higher_is_better: ClassVar[dict[str, bool]] = {"miou": True, "pixel_acc": True}
    primary_metric = "miou"
    display_name = "Segmentation"
    display_kind = "labels"

    def __init__(self, class_names: tuple[str, ...]) -> None:
        if len(class_names) < 2:
            raise ValueError("segmentation needs at least two classes")
        self.class_names = tuple(class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def out_channels(self) -> int:
        return self.num_classes

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        if not (target >= 0).any():
            return pred.sum() * 0.0
        return F.cross_entropy(pred, target, ignore_index=-1)

    def new_metric(self) -> ConfusionMatrix:
        return ConfusionMatrix(self.num_classes)

    # --- explanations -----------------------------------------------------------------------------------

    def explanation_targets(self, pred: torch.Tensor) -> list[ExplanationTarget]:
        """One target per class present in the clean argmax (D12); the pixel set is that class's pixels."""
        labels = pred.detach().argmax(dim=0)
        return [ExplanationTarget(self.name, c, self.class_names[c], labels == c, "class")
                for c in torch.unique(labels).tolist()]

    def gradcam_objective(self, pred: torch.Tensor, target: ExplanationTarget) -> torch.Tensor:
        """Sum of the raw class logit over the class's clean pixels (SegGrad-CAM, D12)."""
        return (pred[target.target_id] * target.mask).sum()

    def perturbation_score(self, pred: torch.Tensor, clean: torch.Tensor, masks: torch.Tensor,
                           target_ids: torch.Tensor, options: ScoreOptions = DEFAULT_SCORE_OPTIONS) -> torch.Tensor:
        """Mean softmax probability of the target class over its clean pixels (D17)."""
        probs = torch.softmax(pred, dim=1)
        idx = target_ids.view(-1, 1, 1, 1).expand(-1, 1, *pred.shape[-2:])
        return masked_mean(probs.gather(1, idx)[:, 0], masks)
