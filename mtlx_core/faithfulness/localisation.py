"""Localisation metrics, free from perturbations: how much of a map lies on the target's pixel set (D15).

- ``rma``, relevance mass accuracy (Arras et al. 2022, https://arxiv.org/abs/2003.07258): the share of the
  map's mass inside the pixel set; chance (a uniform random map) is about the set's share of the image.
- ``pointing``, pointing game (Zhang et al. 2018, https://arxiv.org/abs/1608.00507): 1 when a pixel of the
  map's maximum lies in the set (Quantus' rule for ties), else 0.
- ``leakage``, off-target leakage: the share of the map's ``|S|`` most relevant pixels that fall outside the
  set ``S`` (1 - relevance rank accuracy, Arras et al. 2022); ``score_norm`` = 1 - leakage.
Maps are used as stored (non-negative, min-max normalised Grad-CAM). Random orderings score random maps.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from mtlx_core.faithfulness.metric import Metric


class RelevanceMass(Metric):
    name: ClassVar[str] = "rma"
    kind: ClassVar[str] = "map"
    reference: ClassVar[str] = "Arras et al. 2022, relevance mass accuracy"
    settings = None

    def score_map(self, saliency: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
        a = np.clip(saliency.astype(np.float64), 0, None)
        share = float(a[mask].sum() / a.sum()) if a.sum() > 0 else 0.0
        return share, share


class PointingGame(Metric):
    name: ClassVar[str] = "pointing"
    kind: ClassVar[str] = "map"
    reference: ClassVar[str] = "Zhang et al. 2018, pointing game"
    settings = None

    def score_map(self, saliency: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
        hit = float(np.any(mask[saliency == saliency.max()]))
        return hit, hit


class Leakage(Metric):
    name: ClassVar[str] = "leakage"
    kind: ClassVar[str] = "map"
    reference: ClassVar[str] = "1 - relevance rank accuracy (Arras et al. 2022)"
    settings = None

    def score_map(self, saliency: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
        k = int(mask.sum())
        top = np.argsort(-saliency.reshape(-1), kind="stable")[:k]
        outside = float(1.0 - mask.reshape(-1)[top].mean())
        return outside, 1.0 - outside
