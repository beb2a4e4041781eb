"""Validation metrics of a model, and of the trivial predictors it must clearly beat."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from mtlx_core.data.dataset import MTLDataset
from mtlx_core.tasks import Task
from mtlx_core.train.batches import eval_batches

logger = logging.getLogger(__name__)


@torch.inference_mode()
def evaluate(model: nn.Module, dataset: MTLDataset, tasks: dict[str, Task], batch_size: int = 8,
             device: str | torch.device = "cpu") -> dict[str, dict[str, float]]:
    """Pixel-pooled metrics of every task over the whole split (decision D22)."""
    was_training = model.training
    model.eval()
    metrics = {name: task.new_metric() for name, task in tasks.items()}
    for batch in eval_batches(dataset, batch_size):
        out = model(batch["image"].to(device))
        for name in tasks:
            metrics[name].update(out[name].float().cpu(), batch[name])
    model.train(was_training)
    return {name: m.compute() for name, m in metrics.items()}


def _constant_prediction(task: str, value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    b, _, h, w = like.shape[0], None, like.shape[-2], like.shape[-1]
    return value.view(1, -1, 1, 1).expand(b, value.numel(), h, w)


def fit_trivial_predictors(train: MTLDataset, max_frames: int = 256) -> dict[str, torch.Tensor]:
    """Constant predictors fitted on the training split: the majority class (one-hot logits), the mean
    valid depth, and the best constant normal (lowest median angle among the mean normal and the six axes)."""
    n = min(len(train), max_frames)
    frames = [train[i] for i in np.linspace(0, len(train) - 1, n).astype(int)]
    preds: dict[str, torch.Tensor] = {}
    if "segmentation" in train.tasks:
        labels = torch.cat([f["segmentation"].flatten() for f in frames])
        counts = torch.bincount(labels[labels >= 0], minlength=train.spec.num_classes)
        preds["segmentation"] = torch.nn.functional.one_hot(counts.argmax(), train.spec.num_classes).float()
    if "depth" in train.tasks:
        d = torch.cat([f["depth"].flatten() for f in frames])
        preds["depth"] = d[d != 0].mean().view(1)
    if "normals" in train.tasks:
        nrm = torch.cat([f["normals"].reshape(3, -1) for f in frames], dim=1)
        nrm = nrm[:, (nrm != 0).any(dim=0)].double()
        mean = nrm.mean(dim=1)
        candidates = [mean / mean.norm().clamp_min(1e-12)] + [v * s for v in torch.eye(3, dtype=torch.float64)
                                                              for s in (1.0, -1.0)]
        med = [torch.rad2deg(torch.arccos((c @ nrm).clamp(-1, 1))).median().item() for c in candidates]
        preds["normals"] = candidates[int(np.argmin(med))].float()
    return preds


def evaluate_trivial(preds: dict[str, torch.Tensor], dataset: MTLDataset, tasks: dict[str, Task],
                     batch_size: int = 8) -> dict[str, dict[str, float]]:
    """Metrics of the constant predictors; tasks without one (registered plugin tasks) are left out."""
    metrics = {name: task.new_metric() for name, task in tasks.items() if name in preds}
    for batch in eval_batches(dataset, batch_size):
        for name in metrics:
            metrics[name].update(_constant_prediction(name, preds[name], batch["image"]), batch[name])
    return {name: m.compute() for name, m in metrics.items()}


#: (task, metric, required ratio model/baseline, "max" if the ratio must be at most that, else at least)
BEAT_TARGETS: tuple[tuple[str, str, float, str], ...] = (
    ("segmentation", "miou", 2.0, "min"),
    ("depth", "rel_err", 0.5, "max"),
    ("normals", "median_angle", 0.5, "max"),
)


def compare_to_baselines(metrics: dict[str, dict[str, float]],
                         baselines: dict[str, dict[str, float]]) -> list[dict[str, object]]:
    """One row per task: model vs trivial predictor on its primary metric and whether the target is met."""
    rows = []
    for task, metric, target, kind in BEAT_TARGETS:
        if task not in metrics:
            continue
        m, b = metrics[task][metric], baselines[task][metric]
        ratio = m / b if b else float("inf")
        ok = ratio >= target if kind == "min" else ratio <= target
        rows.append({"task": task, "metric": metric, "model": m, "trivial": b, "ratio": ratio,
                     "target": f"{'>=' if kind == 'min' else '<='} {target:g}", "met": bool(ok)})
    return rows
