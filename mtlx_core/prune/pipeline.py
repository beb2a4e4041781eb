"""``prune_run``: prune a stored run and fine-tune it into a new run folder (resumable, idempotent).

Methods come from the registry (``mtlx_core.prune.registry``); the pipeline loads the parent, asks the method's
selection step for kept channels (structured: removed physically) or weight masks (kept at zero while
fine-tuning), measures sizes and fine-tunes. The new run has the layout of a trained run; its ``config.json``
adds ``"kind": "prune"``, ``"parent_id"`` and ``"pruning"``: a ``PruningRecord`` (``mtlx_core.prune.record``:
method, variant, target and achieved sparsity, channels removed in all and per module kind, params and MACs
before and after, the fine-tuning recipe, method-specific details). Its id derives from (parent id, method,
variant, sparsity, fine-tuning config), so the same request resumes an interrupted run or returns the finished
one.

Parents must be dense training runs. An iterative method (HRank: ``previous_level``) prunes the previous level's
run (created first, or reused from the store), so the parent recorded in a round-2+ run is the previous round.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from mtlx_core.models.base import MultiTaskModel
from mtlx_core.models.surgery import count_macs, count_params
from mtlx_core.prune.channels import prune_channels, removed_share
from mtlx_core.prune.groups import channel_plan
from mtlx_core.prune.masks import MaskCallback, apply_masks, weight_sparsity
from mtlx_core.prune.method import PruningMethod, Selection, SelectionContext
from mtlx_core.prune.presets import PrunePreset, default_preset, find_prune_preset, get_prune_preset
from mtlx_core.prune.record import (
    FinetuneRecord,
    PruningRecord,
    channels_by_kind,
    small_gamma_kept,
    weights_by_kind,
)
from mtlx_core.prune.registry import get_method
from mtlx_core.runs import DEFAULT_MODELS_DIR, RunError, is_complete, load_run, read_json, run_dir
from mtlx_core.train.config import TrainConfig
from mtlx_core.train.loop import TrainCallback, TrainResult, prepare_data, resolve_device, train, training_threads

logger = logging.getLogger(__name__)


def check_request(method: str, sparsity: float, variant: str | None) -> PruningMethod:
    """Validate method / sparsity / variant (None: the method's default, chosen later from the parent)."""
    m = get_method(method)
    if isinstance(sparsity, bool) or not isinstance(sparsity, int | float) or not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity must be a fraction in (0, 1) (e.g. 0.7 for 70 %), got {sparsity!r}")
    if variant is not None and variant not in m.variants:
        names = ", ".join(v for v in m.variants if v) or "none (leave --variant out)"
        raise ValueError(f"method {method!r} has no variant {variant!r}; valid variants: {names}")
    m.check_sparsity(sparsity)
    return m


def _run_id(parent_cfg: TrainConfig, parent_id: str, method: str, variant: str | None, sparsity: float,
            ft: TrainConfig, preset: PrunePreset) -> str:
    key: dict[str, Any] = {"parent": parent_id, "method": method, "variant": variant,
                           "sparsity": round(float(sparsity), 6), "finetune": ft.fingerprint(),
                           "score_batches": preset.score_batches}
    if method == "hrank":
        key["rank_images"] = preset.rank_images
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    tag = f"{method}-{variant}" if variant else method
    return f"{parent_cfg.preset}-{tag}{sparsity * 100:g}-{digest}"


def _apply(method: PruningMethod, sel: Selection, ctx: SelectionContext, input_shape: tuple[int, ...]
           ) -> tuple[MultiTaskModel, list[TrainCallback], dict[str, Any]]:
    """The model to fine-tune, its callbacks and the size fields of the record."""
    from mtlx_core.models import build_model

    if method.structured:
        if sel.keep is None or sel.masks is not None:
            raise TypeError(f"structured method {method.name!r}: its selection must return kept channels (keep), "
                            f"got {'masks' if sel.masks is not None else 'nothing'}")
        parent, plan = ctx.parent()
        pruned = prune_channels(parent, plan, sel.keep)
        dense = build_model(**parent.arch_config).to(ctx.device)  # the unpruned architecture: "before" sizes
        dense_plan = channel_plan(dense)
        total = dense_plan.prunable_channels(method.channel_kind)
        left = channel_plan(pruned).prunable_channels(method.channel_kind)
        before, after = count_params(dense), count_params(pruned)
        pruned_plan = channel_plan(pruned)
        info = {"params_before": before, "params_after": after, "achieved_sparsity": 1.0 - after / before,
                "macs_before": count_macs(dense, input_shape), "macs_after": count_macs(pruned, input_shape),
                "channels_removed": 1.0 - left / total, "prunable_channels_before": total,
                "prunable_channels_after": left, "removed_by_kind": channels_by_kind(dense, pruned, dense_plan),
                "small_gamma_kept": small_gamma_kept(pruned, pruned_plan) if pruned_plan.prunable("bn") else None,
                "details": {**sel.details,
                            "round_channels_removed": removed_share(plan, sel.keep, method.channel_kind)}}
        return pruned, [], info
    if sel.masks is None or sel.keep is not None:
        raise TypeError(f"unstructured method {method.name!r}: its selection must return weight masks")
    model = sel.model if sel.model is not None else ctx.model
    if model is None:
        raise TypeError(f"method {method.name!r} returned masks without the model they apply to")
    apply_masks(model, sel.masks)
    zeros = sum(int((~m).sum()) for m in sel.masks.values())
    total = count_params(model)
    macs = count_macs(model, input_shape)
    info = {"params_before": total, "params_after": total - zeros, "achieved_sparsity": weight_sparsity(model),
            "macs_before": macs, "macs_after": macs, "removed_by_kind": weights_by_kind(model),
            "details": {**sel.details, "macs_note": "unstructured: zeroed weights are still computed"}}
    return model, [MaskCallback(sel.masks)], info


def resolve_preset(parent_cfg: TrainConfig, parent_id: str, method: str, variant: str | None,
                   preset: str | None) -> PrunePreset:
    """The pruning preset of a request: ``preset`` (it must match the parent and method), else the study's preset
    of (parent training preset, method, variant), else the default recipe."""
    if preset is None:
        return (find_prune_preset(parent_cfg.preset, method, variant)
                or default_preset(parent_cfg.preset, parent_cfg.iterations, method, variant))
    p = get_prune_preset(preset)
    if (p.parent_preset, p.method, p.variant) != (parent_cfg.preset, method, variant):
        raise ValueError(f"preset {preset!r} prunes {p.parent_preset} runs with {p.method}"
                         f"{' ' + p.variant if p.variant else ''}; run {parent_id!r} is a {parent_cfg.preset} "
                         f"run and {method}{' ' + variant if variant else ''} was requested")
    return p


def finetune_record(ft: TrainConfig, variant: str | None) -> FinetuneRecord:
    return FinetuneRecord(ft.optimizer, ft.iterations, ft.lr, ft.lr_step, ft.lr_gamma, ft.batch_size,
                          ft.weight_decay, ft.bn_l1, ft.bn_l1_mode, ft.weighting,
                          "dense initialisation" if variant == "static" else "parent weights")


def finetune_config(parent_cfg: TrainConfig, method: PruningMethod, variant: str | None, preset: PrunePreset,
                     iterations: int | None, device: str | None) -> TrainConfig:
    changes = {**method.finetune_overrides(parent_cfg, variant), **preset.finetune}
    if iterations is not None:
        if iterations <= 0:
            raise ValueError(f"--finetune-iters must be positive, got {iterations}")
        changes["iterations"] = iterations
        every = changes.get("checkpoint_every", parent_cfg.checkpoint_every)
        changes["checkpoint_every"] = min(every, max(1, iterations // 2))
    if device is not None:
        changes["device"] = device
    return dataclasses.replace(parent_cfg, **changes)


def parent_config(parent_id: str, models_dir: str | Path, data_root: str | None) -> tuple[TrainConfig, str]:
    parent_path = run_dir(parent_id, models_dir)
    if not is_complete(parent_path):
        load_run(parent_id, models_dir)  # raises the clear error (missing: lists the available runs)
    config = read_json(parent_path / "config.json")
    if config.get("kind", "train") != "train":
        raise RunError(f"run {parent_id!r} is a {config.get('kind')} run: prune a dense training run "
                       f"(HRank chains its rounds itself)")
    if not isinstance(config.get("train"), dict) or "architecture" not in config:
        raise RunError(f"{parent_path / 'config.json'} has no 'train' / 'architecture' entry")
    cfg = TrainConfig.from_dict(config["train"])
    if data_root is not None:
        cfg = dataclasses.replace(cfg, data_root=str(data_root))
    return cfg, config["architecture"]["arch"]


def finetune_plan(m: PruningMethod, parent_id: str, variant: str | None, preset: str | None,
                  finetune_iterations: int | None, models_dir: str | Path, data_root: str | None,
                  device: str | None, given: TrainConfig | None = None
                  ) -> tuple[TrainConfig, str | None, PrunePreset, TrainConfig]:
    """The parent's config, the variant, the prune preset and the fine-tuning config of ``m`` on ``parent_id``
    (shared by pruned runs and their training-budget controls, ``mtlx_core.prune.control``). ``given``: the
    parent's training config, used while the parent is not trained yet by a method that never reads its weights
    (static DiSparse: precompute does not wait for the dense model)."""
    if given is not None and not m.needs_parent_weights(variant) and not is_complete(run_dir(parent_id, models_dir)):
        if given.run_id() != parent_id:
            raise RunError(f"the given parent config has run id {given.run_id()!r}, not {parent_id!r}")
        parent_cfg = given if data_root is None else dataclasses.replace(given, data_root=str(data_root))
        arch = parent_cfg.arch
    else:
        parent_cfg, arch = parent_config(parent_id, models_dir, data_root)
    if not m.supports(arch):
        raise ValueError(f"method {m.name!r} does not support architecture {arch!r}; supported: "
                         f"{', '.join(m.architectures)} and plugin models")
    variant = variant if variant is not None else m.default_variant(parent_cfg)
    m.check_parent(parent_cfg, variant, parent_id)
    p = resolve_preset(parent_cfg, parent_id, m.name, variant, preset)
    return parent_cfg, variant, p, finetune_config(parent_cfg, m, variant, p, finetune_iterations, device)


def prune_run(parent_id: str, method: str, sparsity: float, *, variant: str | None = None,
              finetune_iterations: int | None = None, preset: str | None = None,
              models_dir: str | Path = DEFAULT_MODELS_DIR, device: str | None = None, data_root: str | None = None,
              progress: bool = False, parent_config: TrainConfig | None = None) -> TrainResult:
    """Prune run ``parent_id`` with ``method`` at ``sparsity`` and fine-tune it; returns the new run.
    ``parent_config``: the parent's training config, for methods that do not read the parent's weights while
    the parent is still training (``finetune_plan``)."""
    m = check_request(method, sparsity, variant)
    parent_cfg, variant, p, ft = finetune_plan(m, parent_id, variant, preset, finetune_iterations, models_dir,
                                               data_root, device, parent_config)
    with training_threads(ft):  # selection (HRank's ranks, DiSparse's scores) and fine-tuning
        return _prune_run(m, parent_id, method, sparsity, variant, finetune_iterations, preset, models_dir, device,
                          data_root, progress, parent_cfg, p, ft)


def _prune_run(m: PruningMethod, parent_id: str, method: str, sparsity: float, variant: str | None,
               finetune_iterations: int | None, preset: str | None, models_dir: str | Path, device: str | None,
               data_root: str | None, progress: bool, parent_cfg: TrainConfig, p: PrunePreset, ft: TrainConfig
               ) -> TrainResult:
    root_id = parent_id
    previous = m.previous_level(sparsity)
    if previous is not None:
        parent_id = prune_run(root_id, method, previous, variant=variant, finetune_iterations=finetune_iterations,
                              preset=preset, models_dir=models_dir, device=device, data_root=data_root,
                              progress=progress).run_id
    run_id = _run_id(parent_cfg, parent_id, method, variant, sparsity, ft, p)
    if is_complete(run_dir(run_id, models_dir)):
        logger.info("pruned run %s already exists", run_id)
        return train(ft, models_dir, run_id=run_id)
    dev = resolve_device(ft.device)
    parent = load_run(parent_id, models_dir, device="cpu") if m.needs_parent_weights(variant) else None
    model = None
    if parent is not None:
        if not isinstance(parent.model, MultiTaskModel):
            raise RunError(f"run {parent_id!r} does not hold a multi-task model of the registry")
        model = parent.model.to(dev)
    train_ds, _ = prepare_data(ft)
    input_shape = tuple(train_ds[0]["image"].shape)
    ctx = SelectionContext(model, channel_plan(model) if m.structured and model is not None else None, parent_id,
                           parent_cfg, ft, sparsity, variant, p, train_ds, dev)
    pruned, callbacks, info = _apply(m, m.select(ctx), ctx, input_shape)
    record = PruningRecord(
        method=method, variant=variant, structured=m.structured, target_sparsity=float(sparsity), preset=p.name,
        root_parent_id=root_id, input_shape=input_shape,
        netslim_mode=variant if method == "netslim" else None,
        finetune=finetune_record(ft, variant),
        **info)
    logger.info("%s %s%s at %.4g: achieved %.4f, params %d -> %d, MACs %d -> %d; removed per module kind: %s",
                parent_id, method, f" ({variant})" if variant else "", sparsity, record.achieved_sparsity,
                record.params_before, record.params_after, record.macs_before, record.macs_after,
                ", ".join(f"{k} {100 * v:.0f} %" for k, v in record.removed_share().items()))
    return train(ft, models_dir, model=pruned, callbacks=callbacks, run_id=run_id, progress=progress,
                 extra_config={"kind": "prune", "parent_id": parent_id, "pruning": record.to_dict()})
