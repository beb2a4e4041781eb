"""Explanations and their faithfulness: Grad-CAM per task target and IROF on SLIC superpixels.

Public API (each module's docstring has the details)::

    from mtlx_core.explain import compute_superpixels, explain, irof

    sps = [compute_superpixels(img) for img in images]          # once per image, any model (D16)
    exps = explain(model, images, task)                           # Grad-CAM per target (D11-D15)
    results = irof(model, images, exps, sps, tasks)               # IROF + random/reversed baselines (D16-D21)

- ``targets``: explanation targets (rules on the Task objects);
- ``gradcam``: ``explain``, ``Explanation``, ``GradCamSettings``;
- ``superpixels``: ``compute_superpixels``, ``Superpixels``, ``SlicSettings``;
- ``irof``: ``irof``, ``IrofRequest``, ``IrofResult``, ``IrofSettings``;
- ``perturbation``: segment orders, fill values, vectorised perturbed images;
- ``fastforward``: ``FastForward``, ``ForwardSettings`` (cheaper inference forwards for IROF);
- ``quantus_ref``: Quantus 0.6.0's IROF, patched, as a reference (tests and benchmarks only).
"""

from mtlx_core.explain.fastforward import FastForward, ForwardSettings
from mtlx_core.explain.gradcam import Explanation, GradCamSettings, explain
from mtlx_core.explain.irof import IrofRequest, IrofResult, IrofSettings, irof
from mtlx_core.explain.superpixels import SlicSettings, Superpixels, compute_superpixels
from mtlx_core.explain.targets import ExplanationTarget

__all__ = [
    "Explanation", "ExplanationTarget", "FastForward", "ForwardSettings", "GradCamSettings", "IrofRequest",
    "IrofResult", "IrofSettings", "SlicSettings", "Superpixels", "compute_superpixels", "explain", "irof",
]
