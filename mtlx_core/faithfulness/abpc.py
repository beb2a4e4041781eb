"""AbPC, area between the perturbation curves (Blücher et al. 2024, https://arxiv.org/abs/2401.10442): the area
between the least- and the most-relevant-first curves of one metric, from its stored MoRF and LeRF results
without new forwards. ``score`` = ``score_norm(MoRF) - score_norm(LeRF)`` of the base metric (its oriented,
normalised scores: for IROF and Deletion the area between the curves over [0, 1], for Insertion likewise with
the curves swapped); 0 = the explanation's order is no better than its reverse. Chance is 0 by symmetry.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from mtlx_core.faithfulness.metric import FaithResult, Metric


@dataclass(frozen=True)
class AbpcSettings:
    of: str = "irof"


class AbPC(Metric):
    name: ClassVar[str] = "abpc"
    kind: ClassVar[str] = "derived"
    reference: ClassVar[str] = "Blücher et al. 2024"

    def __init__(self, of: str = "irof") -> None:
        self.settings = AbpcSettings(of)

    @property
    def label(self) -> str:
        return "abpc" if self.settings.of == "irof" else f"abpc_{self.settings.of}"

    def derive(self, results: list[FaithResult], shape: tuple[int, int]) -> list[FaithResult]:
        base = {(r.image_index, r.task, r.target_id, r.explainer, r.ordering): r for r in results
                if r.metric == self.settings.of and r.ordering in ("morf", "lerf")}
        out = []
        for (i, task, tid, expl, o), morf in base.items():
            if o != "morf":
                continue
            lerf = base.get((i, task, tid, expl, "lerf"))
            if lerf is None:
                continue
            status = morf.status if morf.status != "ok" else lerf.status
            score = None
            if status == "ok" and morf.score_norm is not None and lerf.score_norm is not None:
                score = morf.score_norm - lerf.score_norm
            out.append(replace(morf, metric=self.label, curve=np.zeros(0), x=np.zeros(0), score=score,
                               score_norm=score, status=status,
                               settings={**morf.settings, "metric": {"of": self.settings.of,
                                                                     "base": morf.settings.get("metric")}}))
        return out
