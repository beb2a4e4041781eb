"""Pruning presets: one per arm of the study's Table 1, at paper scale and at demo scale.

A preset maps the parent's *training* preset to a method, its sparsity grid and the fine-tuning recipe. The
recipe is a set of overrides of the parent's ``TrainConfig`` (everything else: data, tasks, batch size, loss
weighting, ``bn_l1``, seed, is the parent's). Paper-scale recipes follow the authors:

- DiSparse static: the masks go on the dense model's initialisation, which is trained with the dense recipe;
- DiSparse magnitude ("pt"): Adam lr 1e-5 for 1000 iterations (R5 ``RETRAIN_EPOCH``);
- Network Slimming: lr 1e-4, batch 8, 36.4k iterations with FAMO, BN L1 kept on (R13; the parent preset's);
- HRank: four rounds share the 145k-iteration budget (36,250 per round, lr 1e-4 halved mid-round;
  algorithms 9.6, "total budget" interpretation).

Demo recipes are sized so that pruning plus fine-tuning a demo model takes at most about 30 s on 2 CPU cores
(static DiSparse trains for the dense demo recipe, about 2 minutes): 40 iterations at the parent's batch size;
Network Slimming and HRank at the parent's learning rate held constant (at paper scale, too, the authors
fine-tune at the training learning rate), magnitude DiSparse at a tenth of it (the authors: a hundredth, for
1000 iterations, which does next to nothing in 40).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METHODS: tuple[str, ...] = ("disparse", "netslim", "hrank")
#: method -> valid variants; the first one is the default
VARIANTS: dict[str, tuple[str | None, ...]] = {"disparse": ("static", "magnitude"), "netslim": (None,),
                                               "hrank": (None,)}
STRUCTURED: dict[str, bool] = {"disparse": False, "netslim": True, "hrank": True}
#: supported (method, architecture) pairs: every method handles both registry architectures
SUPPORTED: frozenset[tuple[str, str]] = frozenset(
    (m, a) for m in METHODS for a in ("segnet_mtan", "deeplab_resnet34"))


@dataclass(frozen=True)
class PrunePreset:
    """How one arm prunes: method, sparsity grid, fine-tuning overrides of the parent's training config."""

    name: str
    parent_preset: str
    method: str
    variant: str | None
    sparsities: tuple[float, ...]
    finetune: dict[str, Any] = field(default_factory=dict)
    score_batches: int = 0  # DiSparse static: batches of SNIP scores
    rank_batches: int = 5  # HRank: batches of rank estimation

    def describe(self) -> str:
        grid = "/".join(f"{s * 100:g}" for s in self.sparsities)
        ft = ", ".join(f"{k}={v}" for k, v in self.finetune.items()) or "the parent's training recipe"
        label = self.method + (f" ({self.variant})" if self.variant else "")
        return f"{self.name}: {label} on {self.parent_preset} runs at {grid} %, fine-tune {ft}"


DISPARSE_GRID = (0.5, 0.7, 0.8, 0.9)
NETSLIM_GRID = (0.5, 0.6, 0.7, 0.8, 0.9)
HRANK_GRID = (0.5, 0.75, 0.875, 0.9375)
#: demo fine-tuning iterations at the demo batch size (see the module docstring)
DEMO_FINETUNE_ITERS = 40

_PRESETS = [
    # Paper scale (Table 1).
    PrunePreset("nyuv2_deeplab_disparse", "nyuv2_deeplab", "disparse", "static", DISPARSE_GRID,
                score_batches=30),
    PrunePreset("nyuv2_deeplab_disparse_magnitude", "nyuv2_deeplab", "disparse", "magnitude", DISPARSE_GRID,
                finetune={"iterations": 1000, "lr": 1e-5, "lr_step": None, "eval_every": 0}),
    PrunePreset("cityscapes_segnet_mtan_famo_netslim", "cityscapes_segnet_mtan_famo", "netslim", None,
                NETSLIM_GRID, finetune={"iterations": 36_400, "lr": 1e-4, "lr_step": None}),
    PrunePreset("nyuv2_segnet_mtan_hrank", "nyuv2_segnet_mtan", "hrank", None, HRANK_GRID,
                finetune={"iterations": 36_250, "lr": 1e-4, "lr_step": 18_125, "eval_every": 0}),
    # Demo scale: the same arms on the demo training presets.
    PrunePreset("demo_deeplab_disparse", "demo_deeplab", "disparse", "static", DISPARSE_GRID, score_batches=5),
    PrunePreset("demo_deeplab_disparse_magnitude", "demo_deeplab", "disparse", "magnitude", DISPARSE_GRID,
                finetune={"iterations": DEMO_FINETUNE_ITERS, "lr": 1e-4, "lr_step": None,
                          "checkpoint_every": DEMO_FINETUNE_ITERS // 2}),
    PrunePreset("demo_segnet_mtan_famo_netslim", "demo_segnet_mtan_famo", "netslim", None, NETSLIM_GRID,
                finetune={"iterations": DEMO_FINETUNE_ITERS, "lr_step": None,
                          "checkpoint_every": DEMO_FINETUNE_ITERS // 2}),
    PrunePreset("demo_segnet_mtan_hrank", "demo_segnet_mtan", "hrank", None, HRANK_GRID,
                finetune={"iterations": DEMO_FINETUNE_ITERS, "lr_step": None,
                          "checkpoint_every": DEMO_FINETUNE_ITERS // 2}),
]
PRUNE_PRESETS: dict[str, PrunePreset] = {p.name: p for p in _PRESETS}


def get_prune_preset(name: str) -> PrunePreset:
    try:
        return PRUNE_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown pruning preset {name!r}; valid presets: {', '.join(PRUNE_PRESETS)}") from None


def find_prune_preset(parent_preset: str, method: str, variant: str | None) -> PrunePreset | None:
    """The preset of (parent training preset, method, variant), or None when no arm of the study matches."""
    for p in _PRESETS:
        if (p.parent_preset, p.method, p.variant) == (parent_preset, method, variant):
            return p
    return None


def default_preset(parent_preset: str, parent_iterations: int, method: str, variant: str | None) -> PrunePreset:
    """Recipe for parents outside Table 1: static DiSparse retrains with the parent's recipe, the others
    fine-tune for a tenth of the parent's iterations at its learning rate."""
    grid = {"disparse": DISPARSE_GRID, "netslim": NETSLIM_GRID, "hrank": HRANK_GRID}[method]
    ft: dict[str, Any] = {} if variant == "static" else {"iterations": max(1, parent_iterations // 10)}
    return PrunePreset(f"default_{method}{'_' + variant if variant else ''}", parent_preset, method, variant, grid,
                       finetune=ft, score_batches=5 if variant == "static" else 0)
