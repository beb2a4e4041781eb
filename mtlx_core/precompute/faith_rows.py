"""The ``faithfulness`` rows of precompute: which metric objects a study runs, and one row per score.

Variants: a metric run with other settings (IROF with the ``fixed`` fill, the depth scalar's ``range`` floor)
is the same ``metric`` with another ``variant`` (a short ``key=value`` text of what differs) and
``settings_key`` (a hash of the metric's settings, the scalar options and, for segment-based metrics, the
SLIC settings). Random orderings carry the same ``settings_key`` as the explainer's rows they are compared
with, ``explainer = 'random'``, ``layer = ''`` and ``layer_role = 'baseline'``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mtlx_core.faithfulness.metric import FaithResult, Metric
from mtlx_core.faithfulness.registry import build_metrics
from mtlx_core.precompute.presets import ExplainSettings

_NOT_IN_VARIANT = {"summary", "segments", "pixels_per_step", "direction"}


def metric_sets(settings: ExplainSettings) -> list[list[Metric]]:
    """Metric objects per ``evaluate`` call: the first holds every selected metric (IROF with the first fill
    mode); each further IROF fill mode runs with its own AbPC (when AbPC is IROF's: ``abpc`` ``of``)."""
    names = settings.metric_names()
    options = settings.options()
    base = str(options.get("abpc", {}).get("of", "irof"))
    if "abpc" in names and base not in names:
        raise ValueError(f"metric abpc is computed from {base}'s curves: select {base} too (or drop abpc)")
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(f"options given for metric(s) {unknown} that the study does not compute: {', '.join(names)}")

    def irof_options(fill: str) -> dict[str, dict[str, Any]]:
        return {"irof": {**options.get("irof", {}), "fill": fill}}

    first = build_metrics(names, {n: o for n, o in options.items() if n != "irof"}
                          | (irof_options(settings.fill_modes[0]) if "irof" in names else {}))
    sets = [first]
    if "irof" in names:
        for fill in settings.fill_modes[1:]:
            extra = ["irof", *(["abpc"] if "abpc" in names and base == "irof" else [])]
            sets.append(build_metrics(extra, irof_options(fill) | {n: options[n] for n in extra[1:] if n in options}))
    return sets


def variant_of(settings: dict[str, Any]) -> str:
    """``key=value`` text of a result's metric settings (and a non-default depth floor)."""
    metric = settings.get("metric") or {}
    flat: dict[str, Any] = {}
    for k, v in metric.items():
        if isinstance(v, dict):
            flat.update({kk: vv for kk, vv in v.items() if kk not in _NOT_IN_VARIANT})
        elif k not in _NOT_IN_VARIANT:
            flat[k] = v
    floor = (settings.get("score") or {}).get("depth_floor", "absolute")
    if floor != "absolute":
        flat["depth_floor"] = floor
    return ",".join(f"{k}={v}" for k, v in flat.items()) or "default"


def settings_key(settings: dict[str, Any]) -> str:
    """Hash of what makes a score comparable: the metric's settings, the scalar options, the superpixels."""
    what = {k: settings.get(k) for k in ("metric", "score", "superpixels")}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def faith_row(model_id: str, image_id: str, r: FaithResult, layer: str, label: str, role: str, cv: str
              ) -> dict[str, Any]:
    rnd = r.explainer == "random"
    return {"model_id": model_id, "image_id": image_id, "task": r.task, "target_id": r.target_id,
            "target": r.target_name, "explainer": r.explainer, "layer": "" if rnd else layer,
            "layer_label": "" if rnd else label, "layer_role": "baseline" if rnd else role, "metric": r.metric,
            "variant": variant_of(r.settings), "ordering": r.ordering, "replicate": r.replicate, "seed": r.seed,
            "settings_key": settings_key(r.settings), "n_steps": r.n_steps,
            "clean_score": r.clean_score, "curve": [float(v) for v in r.curve], "x": [float(v) for v in r.x],
            "score": r.score, "score_norm": r.score_norm, "status": r.status,
            "settings": json.dumps(r.settings, sort_keys=True, default=str), "code_version": cv}
