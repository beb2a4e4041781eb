"""Pruning presets: one per arm of the study's Table 1, at paper scale and at demo scale.

A preset maps the parent's *training* preset to a method, its sparsity grid and the fine-tuning recipe. The
recipe is a set of overrides of the parent's ``TrainConfig`` (everything else: data, tasks, batch size, loss
weighting, ``bn_l1``, seed, is the parent's). Paper-scale recipes follow the authors:

- DiSparse static: the masks go on the dense model's initialisation, which is trained with the dense recipe;
- DiSparse magnitude ("pt"): Adam lr 1e-5 for 1000 iterations (R5 ``RETRAIN_EPOCH``);
- Network Slimming: lr 1e-4, batch 8, 36.4k iterations with FAMO; BN L1 kept on in the ``authors`` mode (R13),
  off in the published ``decoupled`` and ``sgd`` modes (D23: ``NetworkSlimming.finetune_overrides``); one preset
  per mode;
- HRank: four rounds share the 145k-iteration budget (36,250 per round, lr 1e-4 halved mid-round;
  algorithms 9.6, "total budget" interpretation); ranks on 256 training images;
- L1-norm filters (Li et al. 2017): one-shot on the HRank arm's parent, fine-tuned like one HRank round.

Demo recipes are sized so that pruning plus fine-tuning a demo model takes at most about 30 s on 2 CPU cores
(static DiSparse trains for the dense demo recipe, about 2 minutes): 40 iterations at the parent's batch size;
Network Slimming, HRank and L1-norm filters at the parent's learning rate held constant (at paper scale, too,
the authors fine-tune at the training learning rate), magnitude DiSparse at a tenth of it (the authors: a hundredth, for
1000 iterations, which does next to nothing in 40).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mtlx_core.prune.disparse import DISPARSE_GRID
from mtlx_core.prune.hrank import ROUND_SPARSITIES as HRANK_GRID
from mtlx_core.prune.l1filter import L1_FILTER_GRID
from mtlx_core.prune.netslim import NETSLIM_GRID

__all__ = ["DISPARSE_GRID", "HRANK_GRID", "L1_FILTER_GRID", "NETSLIM_GRID", "PRUNE_PRESETS", "PrunePreset",
           "default_preset", "find_prune_preset", "get_prune_preset"]


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
    rank_images: int = 256  # HRank: training images of the rank estimate (at most the training split)

    def describe(self) -> str:
        grid = "/".join(f"{s * 100:g}" for s in self.sparsities)
        ft = ", ".join(f"{k}={v}" for k, v in self.finetune.items()) or "the parent's training recipe"
        label = self.method + (f" ({self.variant})" if self.variant else "")
        return f"{self.name}: {label} on {self.parent_preset} runs at {grid} %, fine-tune {ft}"


#: demo fine-tuning iterations at the demo batch size (see the module docstring)
DEMO_FINETUNE_ITERS = 40

_DEMO_FT = {"iterations": DEMO_FINETUNE_ITERS, "lr_step": None, "checkpoint_every": DEMO_FINETUNE_ITERS // 2}
_PAPER_NETSLIM_FT = {"iterations": 36_400, "lr": 1e-4, "lr_step": None}
_PAPER_ROUND_FT = {"iterations": 36_250, "lr": 1e-4, "lr_step": 18_125, "eval_every": 0}

_PRESETS = [
    # Paper scale (Table 1; Network Slimming in each mode of D23, L1-norm filters beside HRank).
    PrunePreset("nyuv2_deeplab_disparse", "nyuv2_deeplab", "disparse", "static", DISPARSE_GRID,
                score_batches=30),
    PrunePreset("nyuv2_deeplab_disparse_magnitude", "nyuv2_deeplab", "disparse", "magnitude", DISPARSE_GRID,
                finetune={"iterations": 1000, "lr": 1e-5, "lr_step": None, "eval_every": 0}),
    *(PrunePreset(f"cityscapes_segnet_mtan_famo_netslim{'' if mode == 'decoupled' else '_' + mode}",
                  "cityscapes_segnet_mtan_famo", "netslim", mode, NETSLIM_GRID, finetune=_PAPER_NETSLIM_FT)
      for mode in ("decoupled", "authors", "sgd")),
    PrunePreset("nyuv2_segnet_mtan_hrank", "nyuv2_segnet_mtan", "hrank", None, HRANK_GRID,
                finetune=_PAPER_ROUND_FT, rank_images=256),
    PrunePreset("nyuv2_segnet_mtan_l1_filter", "nyuv2_segnet_mtan", "l1_filter", None, L1_FILTER_GRID,
                finetune=_PAPER_ROUND_FT),
    # Demo scale: the same arms on the demo training presets.
    PrunePreset("demo_deeplab_disparse", "demo_deeplab", "disparse", "static", DISPARSE_GRID, score_batches=5),
    PrunePreset("demo_deeplab_disparse_magnitude", "demo_deeplab", "disparse", "magnitude", DISPARSE_GRID,
                finetune={"iterations": DEMO_FINETUNE_ITERS, "lr": 1e-4, "lr_step": None,
                          "checkpoint_every": DEMO_FINETUNE_ITERS // 2}),
    *(PrunePreset(f"demo_segnet_mtan_famo_netslim{'' if mode == 'decoupled' else '_' + mode}",
                  "demo_segnet_mtan_famo", "netslim", mode, NETSLIM_GRID, finetune=_DEMO_FT)
      for mode in ("decoupled", "authors", "sgd")),
    PrunePreset("demo_segnet_mtan_hrank", "demo_segnet_mtan", "hrank", None, HRANK_GRID, finetune=_DEMO_FT,
                rank_images=256),
    PrunePreset("demo_segnet_mtan_l1_filter", "demo_segnet_mtan", "l1_filter", None, L1_FILTER_GRID,
                finetune=_DEMO_FT),
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
    from mtlx_core.prune.registry import get_method

    grid = get_method(method).grid
    ft: dict[str, Any] = {} if variant == "static" else {"iterations": max(1, parent_iterations // 10)}
    return PrunePreset(f"default_{method}{'_' + variant if variant else ''}", parent_preset, method, variant, grid,
                       finetune=ft, score_batches=5 if variant == "static" else 0)
