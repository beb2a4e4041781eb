"""Explanation targets (decisions D12-D15): what one Grad-CAM map and one IROF curve are about.

The rules live on the Task objects (``mtlx_core.tasks``), next to each task's loss and metrics:

- ``task.explanation_targets(pred)`` -> ``list[ExplanationTarget]`` from one image's clean prediction
  ``(C, H, W)``: segmentation = one per class present (id = class index, name = class name); depth = one per
  non-empty bin of five (id 0-4, ``bin 2 [0.4, 0.6)``; ``DepthTask(bins="empirical_quantile")`` switches to
  per-image quintiles, ``bin 2 [p40, p60)``); normals = one per non-empty octant (id 0-7 in the authors'
  order, name = sign triple ``(+,-,+)``, threshold 0);
- ``task.gradcam_objective(pred, target)``: the differentiable scalar Grad-CAM explains;
- ``task.perturbation_score(pred, clean, masks, target_ids)``: the IROF task scalar (D17), batched over rows;

The pixel set (``target.mask``) is fixed from the clean prediction and reused at every IROF step (D15).
"""

from __future__ import annotations

from mtlx_core.tasks.base import ExplanationTarget

__all__ = ["ExplanationTarget"]
