"""Study presets: which arms (model x pruning method x sparsity grid) to build and how to explain them.

An arm is one row of the study's Table 1: a dense training preset (``mtlx_core.train``), a pruning method with
its sparsity grid (``mtlx_core.prune.presets``), optionally with overrides that shrink training (smoke).
:class:`ExplainSettings` fixes everything that changes an explanation or an IROF number (they are recorded in
the store's ``meta`` and a store refuses to mix two settings) plus the number of images, which may grow.

Every preset gives each arm a training-budget control (``controls``) and measures every model's latency
(``latency``, D27).

- ``smoke``: two tiny arms (SegNet-MTAN + FAMO + Network Slimming, DeepLab + DiSparse), one pruned level each,
  4 images of 32 x 64, 16 superpixels, both fill modes; for tests, well under a minute on 2 CPU cores.
- ``demo``: the three arms of Table 1 on the synthetic rooms at demo scale, 44 validation images per arm;
  ``demo_seeds``: the same with 3 training seeds per arm (``--seeds N`` gives any preset N seeds).
- ``paper``, ``paper_nyuv2``, ``paper_cityscapes``: the arms at paper scale on the real datasets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from mtlx_core.explain.sanity import SanitySettings
from mtlx_core.explain.superpixels import SlicSettings
from mtlx_core.prune.latency import LatencySettings
from mtlx_core.prune.netslim import netslim_training
from mtlx_core.prune.presets import DISPARSE_GRID, HRANK_GRID, L1_FILTER_GRID, NETSLIM_GRID, get_prune_preset
from mtlx_core.train.config import get_preset, synth_cache


@dataclass(frozen=True)
class ArmSpec:
    """One arm: a dense training preset pruned with one method at every sparsity of a grid."""

    arm_id: str
    label: str
    train_preset: str
    method: str
    variant: str | None
    sparsities: tuple[float, ...]
    prune_preset: str | None = None  # name in PRUNE_PRESETS (its fine-tuning recipe); None: pipeline default
    train_overrides: dict[str, Any] = field(default_factory=dict)
    finetune_iterations: int | None = None  # None: the prune preset's recipe


def resolve_primary_layer(primary_layers: Any, layer: str | None, arch: str, task: str,
                          arm_id: str | None = None) -> str | None:
    """``ExplainSettings.primary_layer`` on its fields (also as a store records them: lists of pairs)."""
    layers = {str(k): str(v) for k, v in primary_layers or []}
    for scope in ([f"{arm_id}:{task}", arm_id] if arm_id else []) + [f"{arch}:{task}", arch]:
        if scope in layers:
            return layers[scope]
    return layer


EXTRA_SCOPES: tuple[str, ...] = ("all", "dense", "dense_and_first_level")


@dataclass(frozen=True)
class ExplainSettings:
    """What is explained and how; every field but ``images``/``batch_images``/speed knobs changes numbers."""

    images: int = 16  # N validation images of each arm's dataset (a seeded sample, D26)
    batch_images: int = 4  # images per explain unit
    max_targets: int | None = None  # per image and task: a seeded stratified draw among the dense model's targets
    #: (scope, k) pairs overriding ``max_targets`` (scopes as ``primary_layers``; k None: every target)
    target_limits: tuple[tuple[str, int | None], ...] = ()
    image_sample: str = "random"  # D26: "random" = seeded permutation of the split (its first N); "first"
    fill_modes: tuple[str, ...] = ("quantus",)  # IROF's fills (D18): one IROF variant each
    #: faithfulness metrics (``mtlx_core.faithfulness.registry``; ``all``) and per-metric options
    #: ``((name, ((option, value), ...)), ...)``
    metrics: tuple[str, ...] = ("all",)
    metric_options: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    orderings: tuple[str, ...] = ("morf", "lerf", "random")  # D24: the explainer's, reversed, K random
    n_random: int = 5  # K random orderings, the same seeds for every model (common random numbers)
    depth_floors: tuple[str, ...] = ("absolute",)  # D29: the depth scalar's floor; the first is primary
    seed: int = 0
    slic: SlicSettings = field(default_factory=SlicSettings)
    layer: str | None = None  # primary Grad-CAM layer (label or module path); None = the model's default (D11)
    #: (scope, layer label) pairs overriding ``layer``; scope = ``<arm_id>:<task>``, ``<arm_id>``, ``<arch>:<task>``
    #: or ``<arch>`` (the first that matches, in that order)
    primary_layers: tuple[tuple[str, str], ...] = ()
    ablation_layers: tuple[str, ...] = ()  # extra registered layers explained too ("all": every one); adds rows
    depth_bins: str = "equal_width"  # D13
    topk: float = 0.2  # similarity: top-k IoU with k = topk * pixels
    trim_tasks: bool = True  # IROF fast forwards: traced per-task graphs (speed; tiny models: eager is faster)
    batch1_numerics: bool = True  # IROF rows bit-identical to batch-1 eager forwards (agreement with Quantus, D20)
    fold_bn: bool = False  # BN folded into convs: faster, but the rounding change flips max-unpool ties (SegNet)
    channels_last: bool = False  # idem
    #: ``tie_safe``: BN folding and channels-last in every graph without max-unpool (DeepLab; ~2.5x faster);
    #: ``index_safe``: also in SegNet-MTAN's decoder and task branches, all but what max-unpool's indices depend on
    rounding: str = "exact"
    #: MiB for a chunk of perturbed images' activations; None: from the device (``mtlx_core.faithfulness.memory``:
    #: on CUDA free memory x ``gpu_share`` x 0.5, on CPU 1024); speed only, not in the key
    memory_budget_mb: int | None = None
    #: the fraction of the GPU one explain unit may use, in (0, 1] (precompute's ``--gpus explain=0.25``); not in
    #: the key
    gpu_share: float = 1.0
    #: explainers (``mtlx_core.explain.explainers``; ``all``) at the primary layers: the first is on every model,
    #: every metric runs on each; the others run where ``extra_explainers_on`` says (the ablation layers and the
    #: map similarity stay the first's)
    explainers: tuple[str, ...] = ("gradcam",)
    #: the models the extra explainers explain: ``all``, ``dense`` (each seed's dense model) or
    #: ``dense_and_first_level`` (the dense models and the lowest pruned sparsity of each arm)
    extra_explainers_on: str = "all"

    def __post_init__(self) -> None:
        from mtlx_core.explain.explainers import explainer_names
        from mtlx_core.faithfulness.memory import check_gpu_share

        names = explainer_names(list(self.explainers))  # registry order: Grad-CAM first
        if names[0] != "gradcam":
            raise ValueError(f"the explainers must include gradcam (the study's explainer on every model, its "
                             f"layer ablation and map similarity), got {', '.join(names)}")
        object.__setattr__(self, "explainers", tuple(names))
        check_gpu_share(self.gpu_share)
        if self.extra_explainers_on not in EXTRA_SCOPES:
            raise ValueError(f"unknown extra_explainers_on {self.extra_explainers_on!r}; valid: "
                             f"{', '.join(EXTRA_SCOPES)}")

    def key_fields(self) -> dict[str, Any]:
        """The fields that change stored numbers (``images``/``batch_images``/``memory_budget_mb``/``gpu_share``
        do not, and ``ablation_layers`` only adds rows)."""
        d = dataclasses.asdict(self)
        for k in ("images", "batch_images", "memory_budget_mb", "gpu_share", "ablation_layers"):
            d.pop(k)
        if not self.target_limits:  # absent when unused: the keys of stores built before it stay valid
            d.pop("target_limits")
        if self.explainers == ("gradcam",):  # idem (issue 21): Grad-CAM alone, as every store before
            d.pop("explainers")
            d.pop("extra_explainers_on")
        d["slic"] = self.slic.to_dict()
        return d

    def metric_names(self) -> list[str]:
        from mtlx_core.faithfulness.registry import metric_names

        return metric_names(list(self.metrics))

    def options(self) -> dict[str, dict[str, Any]]:
        return {name: dict(opts) for name, opts in self.metric_options}

    def primary_layer(self, arch: str, task: str, arm_id: str | None = None) -> str | None:
        """The primary layer (label or path) of a task of a model; None = the model's default (D11)."""
        return resolve_primary_layer(self.primary_layers, self.layer, arch, task, arm_id)

    def targets_for(self, arch: str, task: str, arm_id: str | None = None) -> int | None:
        """Targets drawn per image for a task of a model (``target_limits``' first matching scope, else
        ``max_targets``; None: every target)."""
        limits = dict(self.target_limits)
        for scope in ([f"{arm_id}:{task}", arm_id] if arm_id else []) + [f"{arch}:{task}", arch]:
            if scope in limits:
                return limits[scope]
        return self.max_targets

    def limits_targets(self) -> bool:
        return self.max_targets is not None or any(k is not None for _, k in self.target_limits)

    def ablation_for(self, registered: list[str]) -> list[str]:
        """The ablation layers of an architecture with these registered labels (``all``: every one)."""
        return list(registered) if "all" in self.ablation_layers else [x for x in self.ablation_layers
                                                                        if x in registered]

    def explainers_for(self, is_dense: bool, level: int | None) -> tuple[str, ...]:
        """The explainers of one model: every one where ``extra_explainers_on`` reaches it, else the first only;
        ``level`` = the model's place among its arm's pruned sparsities (0 = the lowest; None: a control)."""
        scope = self.extra_explainers_on
        extra = (scope == "all" or is_dense
                 or (scope == "dense_and_first_level" and level == 0))
        return self.explainers if extra else self.explainers[:1]

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.key_fields(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StudyPreset:
    name: str
    description: str
    arms: tuple[ArmSpec, ...]
    explain: ExplainSettings = field(default_factory=ExplainSettings)
    publish_every_s: float = 120.0  # also publish after every arm and at the end
    #: each arm's training-budget control (the dense model fine-tuned with the arm's schedule at 0 % sparsity),
    #: trained and explained after every arm's primary pass (``mtlx_core.prune.control``)
    controls: bool = True
    #: how every model's latency is measured (D27; ``mtlx_core.prune.latency``)
    latency: LatencySettings = field(default_factory=LatencySettings)
    #: replicates (D25): N dense models per arm, trained with the training preset's seed + 0..N-1, each pruned and
    #: controlled; images are the same for every seed (paired within seed); ``--seeds`` overrides it
    seeds: int = 1
    #: the sanity checks of each dense model's explanations (``mtlx_core.precompute.sanity_unit``); None: off
    sanity: SanitySettings | None = field(default_factory=SanitySettings)


SMOKE_SYNTH = {"n_train": 16, "n_val": 4, "height": 32, "width": 64, "seed": 0}
#: the smoke arms train their tiny models with one thread (``TrainConfig.threads``), FAMO's parent included
SMOKE_TRAIN = {"data_root": synth_cache(SMOKE_SYNTH), "synth": SMOKE_SYNTH, "width": 0.0625, "iterations": 4,
               "batch_size": 2, "checkpoint_every": 2, "eval_every": 0, "threads": 1}

_ARMS_DEMO = (  # the fastest arm first: it is browsable soonest (demo_tuning.md, rounds 6 and 8)
    # DiSparse's magnitude variant (D7's second): the static one retrains the dense recipe at every level
    ArmSpec("demo_deeplab_disparse", "DeepLab-ResNet34 · seg + normals · DiSparse (magnitude)", "demo_deeplab",
            "disparse", "magnitude", (0.0, *DISPARSE_GRID), prune_preset="demo_deeplab_disparse_magnitude"),
    ArmSpec("demo_segnet_mtan_hrank", "SegNet-MTAN · seg + depth + normals · HRank", "demo_segnet_mtan", "hrank",
            None, (0.0, *HRANK_GRID), prune_preset="demo_segnet_mtan_hrank"),
    # Network Slimming as published (D23): decoupled L1 on the prunable BNs, no L1 while fine-tuning
    ArmSpec("demo_segnet_mtan_famo_netslim", "SegNet-MTAN + FAMO · seg + depth · Network Slimming (decoupled)",
            "demo_segnet_mtan_famo", "netslim", "decoupled", (0.0, *NETSLIM_GRID),
            prune_preset="demo_segnet_mtan_famo_netslim",
            train_overrides=netslim_training(get_preset("demo_segnet_mtan_famo"), "decoupled")),
)
_ARMS_PAPER = (
    ArmSpec("nyuv2_deeplab_disparse", "DeepLab-ResNet34 · NYUv2 seg + normals · DiSparse", "nyuv2_deeplab",
            "disparse", "static", (0.0, *DISPARSE_GRID), prune_preset="nyuv2_deeplab_disparse"),
    # D23: Network Slimming as published (decoupled) and as the authors ran it, each on its own parent
    ArmSpec("cityscapes_segnet_mtan_famo_netslim",
            "SegNet-MTAN + FAMO · Cityscapes seg + depth · Network Slimming (decoupled)",
            "cityscapes_segnet_mtan_famo", "netslim", "decoupled", (0.0, *NETSLIM_GRID),
            prune_preset="cityscapes_segnet_mtan_famo_netslim",
            train_overrides=netslim_training(get_preset("cityscapes_segnet_mtan_famo"), "decoupled")),
    ArmSpec("cityscapes_segnet_mtan_famo_netslim_authors",
            "SegNet-MTAN + FAMO · Cityscapes seg + depth · Network Slimming (authors)",
            "cityscapes_segnet_mtan_famo", "netslim", "authors", (0.0, *NETSLIM_GRID),
            prune_preset="cityscapes_segnet_mtan_famo_netslim_authors",
            train_overrides=netslim_training(get_preset("cityscapes_segnet_mtan_famo"), "authors")),
    ArmSpec("nyuv2_segnet_mtan_hrank", "SegNet-MTAN · NYUv2 seg + depth + normals · HRank", "nyuv2_segnet_mtan",
            "hrank", None, (0.0, *HRANK_GRID), prune_preset="nyuv2_segnet_mtan_hrank"),
    # L1-norm filters (Li et al. 2017) on the HRank arm's dense model
    ArmSpec("nyuv2_segnet_mtan_l1_filter", "SegNet-MTAN · NYUv2 seg + depth + normals · L1-norm filters",
            "nyuv2_segnet_mtan", "l1_filter", None, (0.0, *L1_FILTER_GRID), prune_preset="nyuv2_segnet_mtan_l1_filter"),
)
#: the demo's explanation settings, chosen on validation images it does not report (docs/demo_tuning.md, rounds 6,
#: 8, 9): 44 images, one target per image and task drawn at random (stratified; FAMO's segmentation: two), 50
#: superpixels, and per task the Grad-CAM layer whose margin over the random ordering was largest there; DeepLab's
#: D11 layer is computed as an ablation layer where it is not primary (``--layers all`` adds every registered layer)
_DEMO_EXPLAIN = ExplainSettings(
    images=44, batch_images=4, max_targets=1, slic=SlicSettings(n_segments=50),
    # FAMO's segmentation at its bottleneck: two targets per image (held-out p 0.048 -> 1.3e-10, round 9)
    target_limits=(("demo_segnet_mtan_famo_netslim:segmentation", 2),),
    primary_layers=(("demo_deeplab_disparse:segmentation", "stage3_out"),
                    ("demo_deeplab_disparse:normals", "d11_conv2"),
                    ("demo_segnet_mtan_famo_netslim:segmentation", "enc_bottleneck"),
                    ("demo_segnet_mtan_famo_netslim:depth", "task_att_dec2"),
                    ("demo_segnet_mtan_hrank:segmentation", "task_att_dec2"),
                    ("demo_segnet_mtan_hrank:depth", "dec_stage2"),
                    ("demo_segnet_mtan_hrank:normals", "task_att_dec1")),
    ablation_layers=("d11_conv2",),
    # the metric family within the 20-minute budget (docs/demo_tuning.md, rounds 7-8, 10): one random ordering for
    # the curve metrics (two did not change FAMO's segmentation p in the demo store and cost ~15 % of the
    # explain time; the paper presets use D24's five), five for the localisation metrics (no forwards);
    # Deletion and Insertion in 8 steps, most relevant first and random; AbPC from Deletion's curves (its least
    # relevant first costs 8 forwards per target and explainer, IROF's 50: a quarter of the explain time; the
    # paper presets keep AbPC of IROF)
    # DeepLab's graphs (no max-unpool) with BN folded, channels-last: 2.6x faster units (round 8); SegNet-MTAN's
    # too except its shared encoder, whose pooling indices the decoder's max-unpool reads (13 % faster units,
    # round 10)
    rounding="index_safe",
    metrics=("irof", "deletion", "insertion", "abpc", "rma", "pointing", "leakage"), n_random=1,
    # issue 21: Grad-CAM everywhere; Grad-CAM++ and HiResCAM (same backward) on the dense models and the first
    # pruned level of each arm (a sub-grid, said so in the app; the verdict needs a pruned level). Every metric
    # runs on every explainer, so each extra explainer on a model costs about that model's explain time again
    explainers=("gradcam", "gradcampp", "hirescam"), extra_explainers_on="dense_and_first_level",
    metric_options=(("irof", (("orderings", ("morf", "random")),)),
                    ("deletion", (("n_steps", 8), ("orderings", ("morf", "lerf", "random")))),
                    ("insertion", (("n_steps", 8), ("orderings", ("morf", "random")))),
                    ("abpc", (("of", "deletion"),)),
                    *((m, (("n_random", 5),)) for m in ("rma", "pointing", "leakage"))))
#: paper scale: D11's layers are primary, every registered layer is computed too (the layer ablation)
_PAPER_EXPLAIN = ExplainSettings(images=64, batch_images=8, max_targets=None, ablation_layers=("all",),
                                 depth_floors=("absolute", "range"), explainers=("all",))

STUDY_PRESETS: dict[str, StudyPreset] = {p.name: p for p in (
    StudyPreset("smoke", "two tiny arms, one pruned level each, 4 images (tests)", (
        ArmSpec("smoke_segnet_mtan_famo_netslim", "SegNet-MTAN + FAMO · seg + depth · Network Slimming (tiny)",
                "demo_segnet_mtan_famo", "netslim", "decoupled", (0.0, 0.5),
                prune_preset="demo_segnet_mtan_famo_netslim",
                train_overrides=SMOKE_TRAIN, finetune_iterations=2),
        ArmSpec("smoke_deeplab_disparse", "DeepLab-ResNet34 · seg + normals · DiSparse magnitude (tiny)",
                "demo_deeplab", "disparse", "magnitude", (0.0, 0.5), prune_preset="demo_deeplab_disparse_magnitude",
                train_overrides={**SMOKE_TRAIN, "arch_kwargs": {"head_hidden": 8}}, finetune_iterations=2),
    ), ExplainSettings(images=4, batch_images=2, max_targets=None, fill_modes=("quantus", "fixed"),
                       slic=SlicSettings(n_segments=16), trim_tasks=False, fold_bn=False, channels_last=False,
                       ablation_layers=("dec_stage2", "block_out"), n_random=2, depth_floors=("absolute", "range"),
                       metrics=("irof", "deletion", "insertion", "abpc", "rma", "pointing", "leakage"),
                       metric_options=(("deletion", (("n_steps", 4),)), ("insertion", (("n_steps", 4),))),
                       explainers=("gradcam", "gradcampp")),
        publish_every_s=5.0, sanity=SanitySettings(max_steps=3, n_noise=1, images=2)),
    StudyPreset("demo", "the three arms of Table 1 on the synthetic rooms (CPU scale)", _ARMS_DEMO, _DEMO_EXPLAIN),
    StudyPreset("paper", "the arms of Table 1 at paper scale (NYUv2 and Cityscapes; Network Slimming in two modes, "
                "L1-norm filters beside HRank)", _ARMS_PAPER,
                _PAPER_EXPLAIN, publish_every_s=600.0),
    StudyPreset("paper_nyuv2", "the NYUv2 arms at paper scale (Table 1's two and L1-norm filters)",
                (_ARMS_PAPER[0], *_ARMS_PAPER[3:]), _PAPER_EXPLAIN, publish_every_s=600.0),
    StudyPreset("paper_cityscapes", "the Cityscapes arms at paper scale (Network Slimming, decoupled and authors)",
                _ARMS_PAPER[1:3], _PAPER_EXPLAIN, publish_every_s=600.0),
    StudyPreset("demo_seeds", "the demo with 3 training seeds per arm (replicates: pooled verdict, per-seed rows)",
                _ARMS_DEMO, _DEMO_EXPLAIN, seeds=3),
)}


def get_study_preset(name: str) -> StudyPreset:
    try:
        preset = STUDY_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown precompute preset {name!r}; valid presets: {', '.join(STUDY_PRESETS)}") from None
    for arm in preset.arms:  # the referenced training / pruning presets must exist
        get_preset(arm.train_preset)
        if arm.prune_preset is not None:
            get_prune_preset(arm.prune_preset)
    return preset


def describe(preset: StudyPreset) -> str:
    lines = [f"{preset.name}: {preset.description}"]
    for a in preset.arms:
        grid = "/".join(f"{s * 100:g}" for s in a.sparsities)
        lines.append(f"  {a.arm_id}: {a.label} at {grid} %")
    e = preset.explain
    targets = "all" if e.max_targets is None else f"{e.max_targets} drawn (seeded, stratified)"
    targets += "".join(f"; {scope}: {'all' if k is None else k}" for scope, k in e.target_limits)
    lines.append(f"  {e.images} images ({e.image_sample} sample), targets per task {targets}, fill "
                 f"{'/'.join(e.fill_modes)}, {e.slic.n_segments} superpixels")
    layers = ", ".join(f"{a} {lay}" for a, lay in e.primary_layers) or (e.layer or "D11")
    lines.append(f"  Grad-CAM layer {layers}; ablation layers {', '.join(e.ablation_layers) or 'none'}")
    extra = f" ({', '.join(e.explainers[1:])} on {e.extra_explainers_on} models)" if len(e.explainers) > 1 else ""
    lines.append(f"  explainers {e.explainers[0]} on every model{extra}")
    lines.append(f"  metrics {', '.join(e.metric_names())}; orderings {'/'.join(e.orderings)} "
                 f"({e.n_random} random); depth floor {'/'.join(e.depth_floors)}")
    lat = preset.latency
    seeds = f"{preset.seeds} seeds per arm; " if preset.seeds > 1 else ""
    control = "a training-budget control per arm; " if preset.controls else ""
    lines.append(f"  {seeds}{control}latency: batch {lat.batch}, {lat.threads} CPU thread(s), median of {lat.runs} "
                 f"runs after {lat.warmup} warm-up")
    return "\n".join(lines)
