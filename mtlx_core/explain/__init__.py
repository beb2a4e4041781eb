"""Explanations and their faithfulness: Grad-CAM per task target and IROF on SLIC superpixels.

Public API (each module's docstring has the details)::

    from mtlx_core.explain import compute_superpixels, explain
    from mtlx_core.explain.irof import irof

    sps = [compute_superpixels(img) for img in images]          # once per image, any model (D16)
    exps = explain(model, images, task)                           # Grad-CAM per target (D11-D15)
    results = irof(model, images, exps, sps, tasks)               # IROF + random/reversed baselines (D16-D21)

- ``targets``: explanation targets (rules on the Task objects);
- ``gradcam``: ``explain``, ``Explanation``, ``GradCamSettings``;
- ``superpixels``: ``compute_superpixels``, ``Superpixels``, ``SlicSettings``;
- ``irof``: ``irof``, ``IrofRequest``, ``IrofResult``, ``IrofSettings``;
- ``perturbation``: segment orders and Quantus' fill values (used by ``mtlx_core.faithfulness``);
- ``similarity``: how far a pruned map moved from the dense one (Spearman, SSIM, top-k IoU; no torch);
- ``fastforward``: ``FastForward``, ``ForwardSettings`` (cheaper inference forwards for IROF);
- ``quantus_ref``: Quantus 0.6.0's IROF, patched, as a reference (tests and benchmarks only).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public names and the module that defines each; imported on first use, so that importing a light submodule
#: (``mtlx_core.explain.similarity``, the app's read path) does not import torch
_EXPORTS = {
    "FastForward": "fastforward", "ForwardSettings": "fastforward", "Explanation": "gradcam",
    "GradCamSettings": "gradcam", "explain": "gradcam", "IrofRequest": "irof", "IrofResult": "irof",
    "IrofSettings": "irof", "SlicSettings": "superpixels", "Superpixels": "superpixels",
    "compute_superpixels": "superpixels", "ExplanationTarget": "targets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
