"""Precompute's ``sanity`` unit: the sanity checks of one dense model's explanations (issue 21), as ``sanity`` rows.

On the first ``n_images`` images of the study's first batch, for every explainer of the study and every task of the
model, at the task's primary layer (the study's layer plan, D11), ``mtlx_core.explain.sanity`` runs:

- ``model_randomisation``: cascading parameter randomisation from the task's head towards the input (one row per
  step; the last step carries eMPRT); passes when every step's mean Spearman is below ``threshold``;
- ``head_randomisation``: each task's head re-initialised in turn (``variant`` = that task) and every task's maps
  compared (one row per explained task): the re-initialised task passes when its maps moved (mean Spearman below
  ``threshold``), every other task when its maps stayed (bit-identical, or mean Spearman at least
  ``1 - threshold``: an MTAN's attention may carry a little of the other head's change);
- ``random_target``: each map against another target's map of the same image; passes when the mean Spearman is
  below ``threshold`` (the map depends on the target);
- ``noise_floor``: the maps under ``n_noise`` seeded draws of small input noise (one row per draw): a reference
  (``passed`` NULL), how much a map changes anyway.

Public API::

    key = sanity_key(settings, explainers, image_ids, layers)    # the unit's settings key (uid sanity:<model>:<key>)
    rows = sanity_rows(model_id, model, images, tasks, explainers, layers, settings, key)  # ``sanity`` rows
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mtlx_core.explain.explainers import get_explainer
from mtlx_core.explain.sanity import (
    SanitySettings,
    Similarities,
    head_modules,
    head_randomisation,
    model_randomisation,
    noise_floor,
    random_target_check,
)
from mtlx_core.tasks.base import Task
from mtlx_core.version import code_version

CHECKS = ("model_randomisation", "head_randomisation", "random_target", "noise_floor")


def sanity_key(settings: SanitySettings, explainers: Sequence[str], image_ids: Sequence[str],
               layers: dict[str, str]) -> str:
    """A short hash of everything the unit's rows depend on besides the model."""
    blob = json.dumps([settings.to_dict(), list(explainers), list(image_ids), sorted(layers.items())], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _nums(xs: Sequence[float]) -> list[float | None]:
    return [_num(x) for x in xs]


class _Rows:
    """Collects the rows of one model, with the columns they all share."""

    def __init__(self, model_id: str, settings: SanitySettings, key: str) -> None:
        self.model_id, self.settings, self.key = model_id, settings, key
        self.cv = code_version()
        self.rows: list[dict[str, Any]] = []

    def add(self, explainer: str, task: str, check: str, variant: str, step: int, sim: Similarities, layer: str,
            passed: bool | None, reason: str, modules: Sequence[str] = (), n_zero: int | None = None,
            emprt: float | None = None) -> None:
        n_zero = sum(math.isnan(x) for x in sim.spearman) if n_zero is None else n_zero
        self.rows.append({
            "model_id": self.model_id, "explainer": explainer, "task": task, "check_name": check,
            "variant": variant, "step": step, "label": sim.label, "modules": list(modules),
            "n_maps": len(sim.spearman), "n_zero": int(n_zero), "spearman": _num(sim.mean_spearman),
            "ssim": _num(sim.mean_ssim), "spearman_per_map": _nums(sim.spearman), "ssim_per_map": _nums(sim.ssim),
            "identical": bool(sim.identical), "emprt": emprt, "passed": passed, "reason": reason, "layer": layer,
            "settings_key": self.key, "settings": json.dumps({**self.settings.to_dict(), "layer": layer},
                                                             sort_keys=True),
            "code_version": self.cv})


def _mean(xs: Sequence[float]) -> float | None:
    finite = [x for x in xs if not math.isnan(x)]
    return float(sum(finite) / len(finite)) if finite else None


def _head_verdict(task: str, head_task: str, sim: Similarities, threshold: float) -> tuple[bool | None, str]:
    rho = sim.mean_spearman
    if math.isnan(rho):
        return None, "every original map is all zero"
    if task == head_task:
        moved = rho < threshold
        return moved, f"own head re-initialised: mean Spearman {rho:.3f} ({'<' if moved else '>='} {threshold:g}, " \
                      "needed below)"
    if sim.identical:
        return True, "another task's head re-initialised: maps bit-identical"
    ok = rho >= 1 - threshold
    return ok, f"another task's head re-initialised: mean Spearman {rho:.3f} (at least {1 - threshold:g} needed)"


def sanity_rows(model_id: str, model: nn.Module, images: torch.Tensor, tasks: dict[str, Task],
                explainers: Sequence[str], layers: dict[str, str], settings: SanitySettings, key: str,
                labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every check's rows for ``model`` (eval mode, on the images' device); ``layers`` = module path per task,
    ``labels`` = the layer's registered label per task (recorded; default: the path)."""
    labels = labels or layers
    out = _Rows(model_id, settings, key)
    heads = [t for t in tasks if _has_head(model, t)]
    for name in explainers:
        explainer = get_explainer(name)
        for t, task in tasks.items():
            layer, label = layers[t], labels[t]
            res = model_randomisation(model, images, task, explainer, layer, settings)
            for i, (sim, mods) in enumerate(zip(res.steps, res.modules, strict=True)):
                last = i == len(res.steps) - 1
                out.add(name, t, "model_randomisation", "", i + 1, sim, label, res.passed, res.reason, mods,
                        res.n_zero, _mean(res.emprt) if last else None)
            original = explainer.explain(model, images, task, layer)
            rt = random_target_check(original, settings.seed)
            rho = rt.mean_spearman
            if math.isnan(rho):
                passed, reason = None, "no image has two targets with a non-zero map"
            else:
                passed = rho < settings.threshold
                reason = f"mean Spearman {rho:.3f} to another target's map ({'<' if passed else '>='} " \
                         f"{settings.threshold:g} needed below)"
            out.add(name, t, "random_target", "", 0, rt, label, passed, reason)
            for d, sim in enumerate(noise_floor(model, images, task, explainer, layer, settings)):
                out.add(name, t, "noise_floor", "", d + 1, sim, label, None, "reference: the maps under input noise")
        by_layer: dict[str, dict[str, Task]] = {}
        for t, task in tasks.items():
            by_layer.setdefault(layers[t], {})[t] = task
        for head_task in heads:
            sims: dict[str, Similarities] = {}
            for layer, group in by_layer.items():  # each task explained at its own layer
                sims.update(head_randomisation(model, images, group, head_task, explainer, layer, settings=settings))
            for t in tasks:
                passed, reason = _head_verdict(t, head_task, sims[t], settings.threshold)
                out.add(name, t, "head_randomisation", head_task, 0, sims[t], labels[t], passed, reason,
                        head_modules(model, head_task))
    return out.rows


def _has_head(model: nn.Module, task: str) -> bool:
    try:
        head_modules(model, task)
    except ValueError:
        return False
    return True
