"""Reference IROF scores from Quantus 0.6.0, patched for its known bugs (decision D20).

Used by the agreement test and the benchmark, never by the pipeline. Per (image, target, saliency) it runs
``quantus.IROF`` on a batch of ONE image (so the "mean" fill is that image's own mean) with:

- a ``perturb_func`` that broadcasts Quantus' ``(B, 1, H, W)`` segment mask to the ``(B, 3, H, W)`` input
  (0.6.0 asserts equal shapes and crashes on RGB input); with ``fill_mode="fixed"`` it fills with the
  original image's per-channel mean instead of the current mean;
- ``np.trapz`` aliased to ``np.trapezoid`` when NumPy no longer has it (removed in NumPy 2.4);
- the task scalar as the model's only output: ``ScalarModel`` returns ``task.perturbation_score`` of the model's
  prediction on the target's pixel set as a ``(B, 1)`` tensor, scored with ``y = 0`` and ``softmax=False``.

Public API::

    aoc = quantus_irof(model, image, saliency, task, target)      # float, Quantus' AOC
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch
from torch import nn

from mtlx_core.tasks.base import ExplanationTarget, Task


def quantus_available() -> bool:
    """True when ``quantus`` imports."""
    try:
        import quantus  # noqa: F401
    except Exception:
        return False
    return True


class ScalarModel(nn.Module):
    """``x -> task scalar`` of one target as a 1-class output ``(B, 1)``; the clean prediction is fixed."""

    def __init__(self, model: nn.Module, task: Task, target: ExplanationTarget, clean_image: torch.Tensor) -> None:
        super().__init__()
        self.model = model.eval()
        self.task = task
        self.target = target
        with torch.no_grad():
            self.clean = model(clean_image[None])[task.name].detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pred = self.model(x)[self.task.name]
        n = pred.shape[0]
        masks = self.target.mask[None].expand(n, -1, -1).to(pred.device)
        ids = torch.full((n,), self.target.target_id, dtype=torch.long, device=pred.device)
        return self.task.perturbation_score(pred, self.clean.expand(n, -1, -1, -1), masks, ids)[:, None]


def _broadcast_mask_perturb(arr: np.ndarray, mask: np.ndarray, fixed_fill: np.ndarray | None = None,
                            **kwargs: object) -> np.ndarray:
    """Quantus' ``baseline_replacement_by_mask`` with the mask broadcast to the array's shape."""
    from quantus.functions.perturb_func import baseline_replacement_by_mask

    full = np.broadcast_to(mask, arr.shape)
    if fixed_fill is not None:
        return np.where(full, fixed_fill.reshape(1, -1, 1, 1).astype(arr.dtype), arr)
    return baseline_replacement_by_mask(arr=arr, mask=full, **kwargs)


def quantus_irof(model: nn.Module, image: torch.Tensor, saliency: np.ndarray, task: Task,
                 target: ExplanationTarget, fill_mode: str = "quantus") -> float:
    """Quantus 0.6.0's IROF AOC for one image ``(3, H, W)`` and saliency ``(H, W)``."""
    import quantus

    if not hasattr(np, "trapz"):  # NumPy >= 2.4
        setattr(np, "trapz", np.trapezoid)  # noqa: B010
    device = next(iter(model.parameters()), torch.empty(0)).device
    x = image.detach().to(device, torch.float32)
    wrapper = ScalarModel(model, task, target, x).eval()
    x_np = x.cpu().numpy()[None].astype(np.float32)
    fixed = x_np[0].astype(np.float64).mean(axis=(1, 2)).astype(np.float32) if fill_mode == "fixed" else None
    perturb = functools.partial(_broadcast_mask_perturb, fixed_fill=fixed)
    metric = quantus.IROF(segmentation_method="slic", abs=False, normalise=True, perturb_func=perturb,
                          perturb_baseline="mean", return_aggregate=False, disable_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # np.trapz deprecation, "perturbation caused no change"
        scores = metric(model=wrapper, x_batch=x_np, y_batch=np.zeros(1, dtype=np.int64),
                        a_batch=np.asarray(saliency, dtype=np.float32)[None], softmax=False,
                        device=str(device), batch_size=1)
    return float(scores[0])
