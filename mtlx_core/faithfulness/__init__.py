"""Faithfulness as a family of metrics on one perturbation engine (decisions D16-D21, D24, D28).

Public API::

    from mtlx_core.faithfulness import FamilySettings, build_metrics, evaluate

    metrics = build_metrics("irof,deletion,insertion,abpc,rma,pointing,leakage")
    results = evaluate(model, images, explanations, tasks, metrics, FamilySettings(), superpixels)

- ``plan``: what a curve is (``CurvePlan``, fills, prefix sharing);
- ``engine``: ``Engine``: every distinct perturbed image of one image forwarded once, scored for every user;
- ``memory``: the engine's memory budget per chunk (default: from the device; ``gpu_share`` on a GPU);
- ``metric``: the metric contract, orderings, statuses, ``FaithResult``;
- ``evaluate``: ``evaluate``, ``FamilySettings``;
- one file per metric (``irof``, ``deletion``, ``insertion``, ``road``, ``region``, ``pixelflip``,
  ``faithcorr``, ``abpc``, ``localisation``) and ``registry`` (``METRICS``, ``build_metrics``); adding a metric is
  one file plus one registry line (``docs/metrics.md``);
- ``aggregate``: the one definition of a score per image and its mean and interval over images;
- ``reference``: the reference libraries' implementations (Quantus, pytorch-grad-cam, RISE's loop);
  ``crosscheck``: one stored score recomputed by its reference (``mtlx_core.verify``, the agreement tests).
"""

from mtlx_core.faithfulness.engine import Engine, EngineSettings
from mtlx_core.faithfulness.evaluate import FamilySettings, evaluate
from mtlx_core.faithfulness.metric import ORDERINGS, STATUSES, FaithResult, Metric
from mtlx_core.faithfulness.registry import METRICS, build_metrics, metric_names

__all__ = ["METRICS", "ORDERINGS", "STATUSES", "Engine", "EngineSettings", "FaithResult", "FamilySettings",
           "Metric", "build_metrics", "evaluate", "metric_names"]
