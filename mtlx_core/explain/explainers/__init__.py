"""Explainers by name: Grad-CAM and its variants, Score-CAM, Integrated Gradients (one file each).

Every explainer explains the same Task targets (D12-D15) at the same layer choice (D11, configurable) and returns
the same ``Explanation`` objects as Grad-CAM (``mtlx_core.explain.gradcam``): one per (image, target), the map
ReLU'd and min-max normalised at its own resolution (``map_layer``) and bilinear-resized to the input
(``map_input``); ``e.settings.to_dict()`` records the explainer (``method``), the layer and its options.

Public API::

    from mtlx_core.explain.explainers import EXPLAINERS, explain_all, explainer_names, get_explainer

    exps = get_explainer("gradcampp").explain(model, images, task)       # like gradcam.explain
    exps = get_explainer("scorecam", k=16).explain(model, images, task, layer="dec_stage2")
    names = explainer_names(["all"])                                      # every registered name
    by_name = explain_all([get_explainer(n) for n in names], model, images, task)  # CAMs share one backward

- ``gradcam``, ``gradcampp``, ``hirescam``, ``xgradcam``, ``layercam``: gradient CAMs from one forward and one
  batched backward over all targets of a task (``base.GradientCam``);
- ``scorecam``: Score-CAM on the ``k`` most active channels (default 32), batched over channels and targets;
- ``integrated_gradients``: Captum's Integrated Gradients on the input (baseline, n_steps, method recorded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, is_dataclass

from mtlx_core.explain.explainers.base import Explainer, ExplainerSettings, GradientCam, explain_all
from mtlx_core.explain.explainers.gradcam import GradCam
from mtlx_core.explain.explainers.gradcampp import GradCamPlusPlus
from mtlx_core.explain.explainers.hirescam import HiResCam
from mtlx_core.explain.explainers.integrated_gradients import IntegratedGradients
from mtlx_core.explain.explainers.layercam import LayerCam
from mtlx_core.explain.explainers.scorecam import ScoreCam
from mtlx_core.explain.explainers.xgradcam import XGradCam

#: name -> explainer class (a frozen dataclass whose fields are its options); Grad-CAM first
EXPLAINERS: dict[str, type[Explainer]] = {
    cls.name: cls for cls in (GradCam, GradCamPlusPlus, HiResCam, XGradCam, LayerCam, ScoreCam, IntegratedGradients)
}

__all__ = ["EXPLAINERS", "Explainer", "ExplainerSettings", "GradientCam", "explain_all", "explainer_names",
           "get_explainer"]


def get_explainer(name: str, **options: object) -> Explainer:
    """The explainer ``name`` with ``options`` (its dataclass fields); errors list the valid names / options."""
    if name not in EXPLAINERS:
        raise ValueError(f"unknown explainer {name!r}; valid explainers: {', '.join(EXPLAINERS)}")
    cls = EXPLAINERS[name]
    valid: list[str] = [f.name for f in fields(cls)] if is_dataclass(cls) else []
    bad = sorted(set(options) - set(valid))
    if bad:
        raise ValueError(f"unknown option(s) {', '.join(bad)} for explainer {name!r}; valid options: "
                         f"{', '.join(valid) or 'none'}")
    return cls(**options)


def explainer_names(names: Sequence[str]) -> list[str]:
    """Registered names from a selection (each entry may be comma-separated; ``all`` = every explainer), in
    registry order without repeats; an unknown name raises with the valid ones."""
    wanted = {n.strip() for entry in names for n in entry.split(",") if n.strip()}
    if "all" in wanted:
        return list(EXPLAINERS)
    bad = sorted(wanted - set(EXPLAINERS))
    if bad:
        raise ValueError(f"unknown explainer(s) {', '.join(bad)}; valid explainers: all, {', '.join(EXPLAINERS)}")
    if not wanted:
        raise ValueError(f"no explainer selected; valid explainers: all, {', '.join(EXPLAINERS)}")
    return [n for n in EXPLAINERS if n in wanted]
