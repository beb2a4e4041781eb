"""The protocol of a pruning method: what the registry (``mtlx_core.prune.registry``) holds.

A method is one class: its name, whether it removes channels (``structured``) or zeroes weights, its variants
(the first is the default), its sparsity grid, the architectures it supports, a selection step and the training
callbacks a configuration asks of it. The pipeline (``mtlx_core.prune.pipeline``) does everything else: loading
the parent, physical removal or masking, sizes, the record, fine-tuning. A structured method's selection returns
kept channels per channel group, an unstructured one's weight masks; a method that does not implement
``select`` cannot be instantiated (``TypeError`` at import of the registry), and a selection that returns the
wrong kind for the method is refused by the pipeline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from mtlx_core.data.dataset import MTLDataset
    from mtlx_core.models.base import MultiTaskModel
    from mtlx_core.prune.channels import ChannelPlan
    from mtlx_core.prune.presets import PrunePreset
    from mtlx_core.train.config import TrainConfig
    from mtlx_core.train.loop import TrainCallback

ARCHITECTURES: tuple[str, ...] = ("segnet_mtan", "deeplab_resnet34")


@dataclass
class SelectionContext:
    """What a selection step may use. ``model``: the parent's weights on ``device`` (None where the method's
    variant does not start from them, e.g. static DiSparse); ``plan``: its channel plan (structured methods)."""

    model: MultiTaskModel | None
    plan: ChannelPlan | None
    parent_id: str
    parent_cfg: TrainConfig  # the configuration the parent was trained with
    finetune: TrainConfig  # the fine-tuning configuration
    sparsity: float
    variant: str | None
    preset: PrunePreset
    train_ds: MTLDataset
    device: torch.device

    def parent(self) -> tuple[MultiTaskModel, ChannelPlan]:
        """The parent's model and channel plan (structured methods); a clear error where there is none."""
        if self.model is None or self.plan is None:
            raise ValueError(f"pruning {self.parent_id!r}: this selection needs the parent's weights and channel plan")
        return self.model, self.plan


@dataclass
class Selection:
    """The result of a selection step: ``keep`` (structured: kept channel indices per group) or ``masks``
    (unstructured: boolean weight masks, True = kept, applied to ``model``), and method-specific facts."""

    keep: dict[str, torch.Tensor] | None = None
    masks: dict[str, torch.Tensor] | None = None
    model: MultiTaskModel | None = None  # unstructured: the model the masks go on (default: the parent's)
    details: dict[str, Any] = field(default_factory=dict)


class PruningMethod(ABC):
    """One pruning method (see the module docstring). Subclasses set the class attributes."""

    name: str = ""
    structured: bool = False
    variants: tuple[str | None, ...] = (None,)
    grid: tuple[float, ...] = ()
    architectures: tuple[str, ...] = ARCHITECTURES
    #: structured: which prunable groups the method rates (``ChannelPlan.prunable``: "", "bn" or "rank")
    channel_kind: str = ""

    def supports(self, arch: str) -> bool:
        """Whether the method prunes ``arch``: its listed architectures and every plugin model (a structured
        method then works on the plan derived from Torch-Pruning's graph, ``mtlx_core.prune.derived_plan``)."""
        return arch in self.architectures or arch not in ARCHITECTURES

    def check_sparsity(self, sparsity: float) -> None:
        """Raise ``ValueError`` for a sparsity the method cannot produce (the range is checked before)."""
        return None

    def previous_level(self, sparsity: float) -> float | None:
        """The level to prune first and start from (iterative methods, e.g. HRank's rounds); None: the parent."""
        return None

    def needs_parent_weights(self, variant: str | None) -> bool:
        return True

    def default_variant(self, parent_cfg: TrainConfig) -> str | None:
        return self.variants[0]

    def check_parent(self, parent_cfg: TrainConfig, variant: str | None, parent_id: str) -> None:
        """Raise ``ValueError`` when the parent cannot be pruned with ``variant`` (e.g. a sparsity-training
        mode other than the parent's)."""
        return None

    def finetune_overrides(self, parent_cfg: TrainConfig, variant: str | None) -> dict[str, Any]:
        """``TrainConfig`` changes every fine-tuning of this method and variant makes (before the preset's)."""
        return {}

    def training_callbacks(self, cfg: TrainConfig) -> list[TrainCallback]:
        """Callbacks that training with ``cfg`` needs from this method (e.g. sparsity regularisers)."""
        return []

    @abstractmethod
    def select(self, ctx: SelectionContext) -> Selection:
        """Kept channels (structured) or weight masks (unstructured) of ``ctx``'s parent at ``ctx.sparsity``."""
