"""The typed record of what a pruning did (``config.json``'s ``"pruning"`` entry), and the per-module counts.

``PruningRecord.to_dict`` is what a pruned run stores; ``PruningRecord.from_dict`` reads it back typed (a missing
field is a ``ValueError`` naming it; keys of records written before a field existed fall back to its default,
unknown keys go to ``details``). Per module kind (``MODULE_KINDS``: trunk encoder, trunk decoder, shared
attention convolutions, attention modules' hidden channels, heads; a plugin model's: shared layers and heads,
by the declared task modules) it holds what the method removed: output
channels of the writing convolutions for structured methods, zeroed weights for unstructured ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from mtlx_core.models.base import SHARED
from mtlx_core.prune.channels import ChannelPlan

#: first component of a module name -> module kind (SegNet-MTAN and DeepLab-ResNet34)
KIND_OF_PREFIX: dict[str, str] = {
    "encoder_block": "trunk_encoder", "conv_block_enc": "trunk_encoder", "backbone": "trunk_encoder",
    "decoder_block": "trunk_decoder", "conv_block_dec": "trunk_decoder",
    "encoder_block_att": "shared_attention", "decoder_block_att": "shared_attention",
    "encoder_att": "attention_hidden", "decoder_att": "attention_hidden", "heads": "heads"}
#: module kinds in display order, with their labels (``shared``: a plugin model's modules that no task owns)
MODULE_KINDS: dict[str, str] = {
    "trunk_encoder": "trunk encoder", "trunk_decoder": "trunk decoder",
    "shared_attention": "shared attention convs", "attention_hidden": "attention hidden", "heads": "heads",
    "shared": "shared layers"}
#: a kept channel whose (mean rating) |gamma| is below this is counted as nearly dead
SMALL_GAMMA = 1e-3


def module_kind(name: str, model: nn.Module | None = None) -> str:
    """The kind of module ``name``: by its first component for our architectures; for another model
    (``model`` given, e.g. a plugin model) ``heads`` when a task owns it (``model.module_owner``), else
    ``shared``."""
    prefix = name.split(".", 1)[0]
    if prefix in KIND_OF_PREFIX:
        return KIND_OF_PREFIX[prefix]
    owner = getattr(model, "module_owner", None)
    if callable(owner):
        return "shared" if owner(name) == SHARED else "heads"
    raise ValueError(f"module {name!r} has no module kind; known prefixes: {', '.join(KIND_OF_PREFIX)} (pass the "
                     f"model to classify other models' modules by their owner)")


@dataclass(frozen=True)
class ModuleShare:
    """Channels (or weights) of one module kind before and after pruning."""

    kind: str
    before: int
    after: int
    unit: str  # "channels" (output channels of the writing convs) or "weights" (zeroed entries)

    @property
    def removed(self) -> float:
        return 1.0 - self.after / self.before if self.before else 0.0


def channels_by_kind(dense: nn.Module, pruned: nn.Module, plan: ChannelPlan) -> tuple[ModuleShare, ...]:
    """Output channels per module kind of every conv that writes a channel group (attention masks, which only
    multiply a group, are not counted), in the dense architecture and in the pruned model."""
    d, p = dict(dense.named_modules()), dict(pruned.named_modules())
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    for g in plan.groups.values():
        for prod in g.producers:
            if prod.tied:
                continue
            k = module_kind(prod.conv, dense)
            before[k] = before.get(k, 0) + int(d[prod.conv].out_channels)
            after[k] = after.get(k, 0) + int(p[prod.conv].out_channels)
    return tuple(ModuleShare(k, before[k], after[k], "channels") for k in MODULE_KINDS if k in before)


def weights_by_kind(model: nn.Module) -> tuple[ModuleShare, ...]:
    """Conv / linear weight entries per module kind, and how many are non-zero (unstructured pruning)."""
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            k = module_kind(name, model)
            before[k] = before.get(k, 0) + m.weight.numel()
            after[k] = after.get(k, 0) + int((m.weight != 0).sum())
    return tuple(ModuleShare(k, before[k], after[k], "weights") for k in MODULE_KINDS if k in before)


def small_gamma_kept(model: nn.Module, plan: ChannelPlan) -> int:
    """Channels of ``model`` (a pruned model: every channel is kept) rated by BNs whose mean |gamma| < 1e-3."""
    from mtlx_core.prune.netslim import bn_scores

    return sum(int((s < SMALL_GAMMA).sum()) for s in bn_scores(model, plan).values())


@dataclass(frozen=True)
class FinetuneRecord:
    optimizer: str
    iterations: int
    lr: float
    lr_step: int | None
    lr_gamma: float
    batch_size: int
    weight_decay: float
    bn_l1: float
    bn_l1_mode: str
    weighting: str
    start: str  # "parent weights" or "dense initialisation"


@dataclass(frozen=True)
class PruningRecord:
    """What one pruning did (see the module docstring)."""

    method: str
    variant: str | None
    structured: bool
    target_sparsity: float
    achieved_sparsity: float  # structured: share of parameters removed; unstructured: of weights zeroed
    preset: str
    root_parent_id: str
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    input_shape: tuple[int, ...]
    finetune: FinetuneRecord
    removed_by_kind: tuple[ModuleShare, ...] = ()
    channels_removed: float | None = None  # structured: share of the method's prunable channels (vs dense)
    prunable_channels_before: int | None = None
    prunable_channels_after: int | None = None
    small_gamma_kept: int | None = None  # kept channels with |gamma| < 1e-3 (structured, BN-rated groups)
    netslim_mode: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # method-specific facts (threshold, round, ...)

    @property
    def param_sparsity(self) -> float:
        return 1.0 - self.params_after / self.params_before if self.params_before else 0.0

    def removed_share(self) -> dict[str, float]:
        return {m.kind: m.removed for m in self.removed_by_kind}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["removed_by_kind"] = [{**dataclasses.asdict(m), "removed": m.removed, "label": MODULE_KINDS[m.kind]}
                                for m in self.removed_by_kind]
        d["param_sparsity"] = self.param_sparsity
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PruningRecord:
        if not isinstance(d, dict):
            raise ValueError(f"a pruning record is a JSON object, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        missing = [n for n in required if n not in d]
        if missing:
            raise ValueError(f"pruning record lacks {', '.join(missing)}")
        kw = {k: v for k, v in d.items() if k in fields}
        extra = {k: v for k, v in d.items() if k not in fields and k not in ("param_sparsity",)}
        ft = dict(d["finetune"])
        if "from" in ft:  # records written before the typed record
            ft["start"] = ft.pop("from")
        ft.setdefault("optimizer", "adam")
        ft.setdefault("bn_l1_mode", "authors")
        kw["finetune"] = FinetuneRecord(**{f.name: ft[f.name] for f in dataclasses.fields(FinetuneRecord)})
        kw["input_shape"] = tuple(int(x) for x in d["input_shape"])
        kw["removed_by_kind"] = tuple(ModuleShare(m["kind"], int(m["before"]), int(m["after"]), m["unit"])
                                      for m in d.get("removed_by_kind", []))
        kw["details"] = {**extra, **dict(d.get("details") or {})}
        return cls(**kw)
