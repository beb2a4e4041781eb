"""Plumbing of the precompute executor: the arm's training configuration, the data check, clocks and the result."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlx_core.data.dataset import DatasetError
from mtlx_core.data.manifest import DATA_HINTS as DATA_HINTS  # re-exported: defined with the data layer
from mtlx_core.models.layers import layer_labels
from mtlx_core.precompute.presets import ArmSpec, StudyPreset
from mtlx_core.train import TrainConfig, resolve_config


class Clock:
    """Wall and process CPU seconds since creation."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.monotonic(), time.process_time()

    def spent(self) -> tuple[float, float]:
        return time.monotonic() - self.wall, time.process_time() - self.cpu


@dataclass
class PrecomputeResult:
    store: Path
    executed: Counter = field(default_factory=Counter)  # units run in this call, per kind
    skipped: set[str] = field(default_factory=set)  # units found in the journal
    seconds: float = 0.0
    published_at: dict[str, float] = field(default_factory=dict)  # arm_id -> seconds after start
    summary: list[dict[str, Any]] = field(default_factory=list)
    timing: list[tuple[str, int, float, float]] = field(default_factory=list)  # kind, units, wall s, CPU s (store)


def arm_config(arm: ArmSpec, data: dict[str, str], device: str, seed_offset: int = 0) -> TrainConfig:
    """The arm's dense training configuration; ``seed_offset`` k > 0: the replicate trained with the preset's
    seed + k (``--seeds``)."""
    base = resolve_config(arm.train_preset, **arm.train_overrides)
    # no --data: the arm's own folder (its overrides' data_root, e.g. smoke's tiny rooms), not its preset's
    root = data.get(base.dataset, data.get("*")) or base.data_root
    seed = {"seed": base.seed + seed_offset} if seed_offset else {}
    return resolve_config(arm.train_preset, **{**arm.train_overrides, "data_root": root, "device": device, **seed})


def check_data(arms: list[ArmSpec], data: dict[str, str]) -> None:
    """Every real dataset the arms need must be there before any work starts."""
    for arm in arms:
        cfg = arm_config(arm, data, "cpu")
        root = Path(cfg.data_root)
        if cfg.synth is None and not (root / "val").is_dir():
            hint = DATA_HINTS.get(cfg.dataset, "python -m mtlx_core.data").format(root=root)
            raise DatasetError(f"data folder {root} does not exist or has no val/ split: arm {arm.arm_id} needs the "
                               f"{cfg.dataset} dataset in the MTAN layout there; convert it with `{hint}` or pass "
                               f"--data {cfg.dataset}=PATH")


def check_layers(preset: StudyPreset) -> None:
    """Every requested ablation layer is registered by at least one architecture of the preset's arms (a shard
    of one arm skips the layers its architecture does not have, as the whole study does)."""
    archs = {a.arm_id: resolve_config(a.train_preset, **a.train_overrides).arch for a in preset.arms}
    registered = {arch: layer_labels(arch) for arch in set(archs.values())}
    known = {lay for labels in registered.values() for lay in labels}
    unknown = [lay for lay in preset.explain.ablation_layers if lay != "all" and lay not in known]
    if unknown:
        valid = "; ".join(f"{arch}: {', '.join(labels)}" for arch, labels in sorted(registered.items()))
        raise ValueError(f"unknown Grad-CAM layer(s) {', '.join(unknown)}; registered layers per architecture: "
                         f"{valid} (or 'all')")
