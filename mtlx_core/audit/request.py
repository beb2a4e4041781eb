"""What one audit is asked to do (``AuditRequest``), its default explanation settings and ``--model-arg`` parsing."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlx_core.precompute.presets import STUDY_PRESETS, ExplainSettings
from mtlx_core.prune.latency import LatencySettings

#: the demo's explanation settings (its metric family, one drawn target per image and task, 50 superpixels,
#: ``index_safe`` rounding) without its per-arm Grad-CAM layers and target limits: an audited model is explained at
#: the layer its registration names (``explain_layer``), on 32 images
AUDIT_EXPLAIN: ExplainSettings = dataclasses.replace(STUDY_PRESETS["demo"].explain, images=32, target_limits=(),
                                                     primary_layers=(), ablation_layers=())


class AuditInputError(ValueError):
    """Bad input of an audit (a checkpoint, the data, the tasks, the explanation layer): nothing was written."""


@dataclass(frozen=True)
class AuditRequest:
    """One audit: a registered model, its dense checkpoint and pruned checkpoints, the data to evaluate them on.

    ``models_dir`` None: ``<store folder>/<store name>_models``. ``metrics`` None: ``AUDIT_EXPLAIN``'s."""

    model: str
    data: Path
    dataset: str
    tasks: tuple[str, ...]
    dense: Path
    pruned: tuple[Path, ...]
    store: Path
    plugins: tuple[str, ...] = ()
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    models_dir: Path | None = None
    images: int | None = None
    metrics: tuple[str, ...] | None = None
    device: str = "auto"
    progress: bool = True
    latency: LatencySettings = field(default_factory=LatencySettings)
    explain: ExplainSettings = AUDIT_EXPLAIN

    def __post_init__(self) -> None:
        if not self.pruned:
            raise AuditInputError("give at least one pruned checkpoint (--pruned CKPT)")
        if not self.tasks:
            raise AuditInputError("give at least one task (--tasks segmentation,depth)")
        if self.images is not None and self.images < 1:
            raise AuditInputError(f"--images must be at least 1, got {self.images}")

    @property
    def runs_dir(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.store.parent / f"{self.store.stem}_models"

    def settings(self) -> ExplainSettings:
        """The explanation settings with ``images`` and ``metrics`` applied."""
        s = self.explain
        if self.images is not None:
            s = dataclasses.replace(s, images=self.images)
        if self.metrics is not None:
            s = dataclasses.replace(s, metrics=self.metrics)
        return s


def parse_model_args(values: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs: a value that reads as JSON (``8``, ``0.5``, ``true``, ``[1, 2]``) is that value, any
    other text is a string."""
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise AuditInputError(f"--model-arg {item!r} is not KEY=VALUE with KEY a Python identifier")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out
