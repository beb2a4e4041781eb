"""The faithfulness metrics by name: adding a metric is one file plus one line here (``docs/metrics.md``).

    build_metrics("irof,deletion,abpc")      # or a list, or "all"
    build_metrics(["deletion"], {"deletion": {"n_steps": 16}})
    build_metrics("irof,deletion", {"deletion": {"orderings": ("morf", "random"), "n_random": 2}})
    # every metric takes ``orderings`` and ``n_random`` (overriding the study's for that metric)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mtlx_core.faithfulness.abpc import AbPC
from mtlx_core.faithfulness.deletion import Deletion
from mtlx_core.faithfulness.faithcorr import FaithfulnessCorrelation
from mtlx_core.faithfulness.insertion import Insertion
from mtlx_core.faithfulness.irof import Irof
from mtlx_core.faithfulness.localisation import Leakage, PointingGame, RelevanceMass
from mtlx_core.faithfulness.metric import ORDERINGS, Metric
from mtlx_core.faithfulness.pixelflip import PixelFlipping
from mtlx_core.faithfulness.region import RegionPerturbation
from mtlx_core.faithfulness.road import Road

METRICS: dict[str, Callable[..., Metric]] = {
    "irof": Irof,
    "deletion": Deletion,
    "insertion": Insertion,
    "road": Road,
    "region": RegionPerturbation,
    "pixelflip": PixelFlipping,
    "faithcorr": FaithfulnessCorrelation,
    "abpc": AbPC,
    "rma": RelevanceMass,
    "pointing": PointingGame,
    "leakage": Leakage,
}


def metric_names(spec: str | Sequence[str]) -> list[str]:
    """Names from ``"a,b"``, a list, or ``"all"``; unknown names raise an error that lists the valid ones."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
    names = [n for n in names if n]
    if "all" in names:
        return list(METRICS)
    bad = [n for n in names if n not in METRICS]
    if bad:
        raise ValueError(f"unknown metric(s) {bad}; valid metrics: {', '.join(METRICS)}, all")
    if not names:
        raise ValueError(f"no metric selected; valid metrics: {', '.join(METRICS)}, all")
    return list(dict.fromkeys(names))


def build_metrics(spec: str | Sequence[str], options: Mapping[str, Mapping[str, Any]] | None = None
                  ) -> list[Metric]:
    """Metric objects in registry order (derived metrics last); ``options``: keyword arguments per name."""
    names = metric_names(spec)
    options = options or {}
    bad = sorted(set(options) - set(METRICS))
    if bad:
        raise ValueError(f"options for unknown metric(s) {bad}; valid metrics: {', '.join(METRICS)}")
    built = []
    for n in METRICS:
        if n in names:
            opts = dict(options.get(n, {}))
            orderings, n_random = opts.pop("orderings", None), opts.pop("n_random", None)
            try:
                m = METRICS[n](**opts)
            except TypeError as exc:
                raise ValueError(f"bad options for metric {n!r}: {exc}") from exc
            if orderings is not None:
                bad = [o for o in orderings if o not in ORDERINGS]
                if bad:
                    raise ValueError(f"metric {n!r}: unknown ordering(s) {bad}; valid: {', '.join(ORDERINGS)}")
                m.orderings = tuple(orderings)
            if n_random is not None:
                m.n_random = int(n_random)
            built.append(m)
    return sorted(built, key=lambda m: m.kind == "derived")
