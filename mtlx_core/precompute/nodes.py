"""The planner's data: nodes of the unit DAG, what a resolved node runs, and what the driver knows of an arm."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mtlx_core.explain.target_draw import TargetDraw
from mtlx_core.precompute.jobs import Job
from mtlx_core.precompute.presets import ArmSpec
from mtlx_core.precompute.units import Batch
from mtlx_core.store.writer import UnitRows
from mtlx_core.train import TrainConfig


@dataclass
class Node:
    key: str
    kind: str
    arm_id: str
    phase: str
    deps: tuple[str, ...]
    priority: int = 0
    args: dict[str, Any] = field(default_factory=dict)  # what resolve needs (batch, seed, level, ...)


@dataclass
class Prepared:
    uids: list[str]
    job: Job | None = None
    local: Callable[[], list[UnitRows]] | None = None  # driver-side units (store reads only)
    claims: frozenset[str] = frozenset()


@dataclass
class ArmData:
    """What the driver knows of an arm before any unit runs: its seeds' training configs and its image batches."""

    pos: int
    arm: ArmSpec
    cfgs: list[TrainConfig]
    spec: Any
    batches: list[Batch]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.batches[0].images.shape[1:])


def draw_key(image_ids: list[str], draw: TargetDraw) -> str:
    """The key of a target draw over these images (the ``targets`` unit id's last part)."""
    return hashlib.sha256(json.dumps([image_ids, draw.to_dict()], sort_keys=True).encode()).hexdigest()[:16]


def planning_batches(cfg: TrainConfig, spec: Any, n_images: int, batch_images: int) -> list[Batch]:
    """Batches of the right count and image size without reading data (the plan mode): keys ``<dataset>-b<i>``."""
    import torch

    h, w = (cfg.synth["height"], cfg.synth["width"]) if cfg.synth else (spec.height, spec.width)
    out = []
    for i, start in enumerate(range(0, n_images, batch_images)):
        idx = list(range(start, min(n_images, start + batch_images)))
        out.append(Batch(f"{cfg.dataset}-b{i}", idx, [f"{cfg.dataset}-{j}" for j in idx],
                         torch.empty((len(idx), 3, h, w))))
    return out


def arm_tag(arm: ArmSpec) -> str:
    return arm.method + (f"-{arm.variant}" if arm.variant else "")


def finetune_tag(arm: ArmSpec) -> str:
    return str(arm.finetune_iterations or arm.prune_preset or "default")
