"""The registry of pruning methods: one plain dict, name -> ``PruningMethod`` (``mtlx_core.prune.method``).

A new method is one file with its ``PruningMethod`` subclass plus one line here (``l1filter.py`` is the worked
example). Every entry point (CLI, presets, pipeline, precompute) looks methods up here; an unknown name gets a
``ValueError`` listing the valid ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtlx_core.prune.disparse import DiSparse
from mtlx_core.prune.hrank import HRank
from mtlx_core.prune.l1filter import L1Filter
from mtlx_core.prune.method import PruningMethod
from mtlx_core.prune.netslim import NetworkSlimming

if TYPE_CHECKING:
    from mtlx_core.train.config import TrainConfig
    from mtlx_core.train.loop import TrainCallback

PRUNING_METHODS: dict[str, PruningMethod] = {m.name: m for m in (
    DiSparse(),
    NetworkSlimming(),
    HRank(),
    L1Filter(),
)}


def get_method(name: str) -> PruningMethod:
    try:
        return PRUNING_METHODS[name]
    except KeyError:
        raise ValueError(f"unknown pruning method {name!r}; valid methods: {', '.join(PRUNING_METHODS)}") from None


def config_callbacks(cfg: TrainConfig) -> list[TrainCallback]:
    """Every registered method's training callbacks for ``cfg`` (e.g. Network Slimming's BN L1)."""
    return [cb for m in PRUNING_METHODS.values() for cb in m.training_callbacks(cfg)]
