"""``prune_run``: prune a stored run and fine-tune it into a new run folder (resumable, idempotent).

The new run has the layout of a trained run; its ``config.json`` adds ``"kind": "prune"``, ``"parent_id"`` and a
``"pruning"`` dict (method, variant, target and achieved sparsity, channels removed, params and MACs before and
after, the fine-tuning recipe). Its id derives from (parent id, method, variant, sparsity, fine-tuning config), so
the same request resumes an interrupted run or returns the finished one.

Parents must be dense training runs. HRank at round ``r`` prunes the round ``r - 1`` run (created first, or
reused from the store), so the parent recorded in a round-2+ run is the previous round.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtlx_core.models.base import MultiTaskModel
from mtlx_core.models.surgery import count_macs, count_params
from mtlx_core.prune import disparse, hrank, netslim
from mtlx_core.prune.channels import prune_channels, removed_share
from mtlx_core.prune.groups import channel_plan
from mtlx_core.prune.masks import MaskCallback, apply_masks, prunable_weights, weight_sparsity
from mtlx_core.prune.presets import (
    METHODS,
    STRUCTURED,
    SUPPORTED,
    VARIANTS,
    PrunePreset,
    default_preset,
    find_prune_preset,
    get_prune_preset,
)
from mtlx_core.runs import DEFAULT_MODELS_DIR, RunError, is_complete, load_run, read_json, run_dir
from mtlx_core.tasks import build_tasks
from mtlx_core.train.batches import training_batches
from mtlx_core.train.config import TrainConfig
from mtlx_core.train.loop import TrainResult, build_for, init_depth_bias, prepare_data, resolve_device, train

logger = logging.getLogger(__name__)


def check_request(method: str, sparsity: float, variant: str | None) -> str | None:
    """Validate method / sparsity / variant; returns the variant (the method's default when None)."""
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; valid methods: {', '.join(METHODS)}")
    if isinstance(sparsity, bool) or not isinstance(sparsity, int | float) or not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity must be a fraction in (0, 1) (e.g. 0.7 for 70 %), got {sparsity!r}")
    valid = VARIANTS[method]
    if variant is None:
        variant = valid[0]
    elif variant not in valid:
        names = ", ".join(v for v in valid if v) or "none (leave --variant out)"
        raise ValueError(f"method {method!r} has no variant {variant!r}; valid variants: {names}")
    if method == "hrank":
        hrank.hrank_round(sparsity)
    return variant


def _run_id(parent_cfg: TrainConfig, parent_id: str, method: str, variant: str | None, sparsity: float,
            ft: TrainConfig, preset: PrunePreset) -> str:
    key = {"parent": parent_id, "method": method, "variant": variant, "sparsity": round(float(sparsity), 6),
           "finetune": ft.fingerprint(), "score_batches": preset.score_batches, "rank_batches": preset.rank_batches}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    tag = f"{method}-{variant}" if variant else method
    return f"{parent_cfg.preset}-{tag}{sparsity * 100:g}-{digest}"


def _batches(cfg: TrainConfig, train_ds: Any, n: int) -> Any:
    return training_batches(train_ds, cfg.batch_size, cfg.seed, 0, n, getattr(train_ds, "seeded_augment", None))


def _size_record(dense: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    before, after = count_params(dense), count_params(pruned)
    return {"params_before": before, "params_after": after, "param_sparsity": 1.0 - after / before,
            "macs_before": count_macs(dense, input_shape), "macs_after": count_macs(pruned, input_shape),
            "input_shape": list(input_shape)}


def _prune_disparse(parent: Any, cfg: TrainConfig, variant: str, sparsity: float, preset: PrunePreset,
                    train_ds: Any, device: torch.device, input_shape: tuple[int, ...]
                    ) -> tuple[MultiTaskModel, list[Any], dict[str, Any]]:
    if variant == "static":  # the dense run's own initialisation, re-created from its seed
        tasks = build_tasks(train_ds.spec, cfg.tasks)
        torch.manual_seed(cfg.seed)  # exactly as train() builds it
        model = build_for(cfg, tasks)
        if cfg.depth_bias_init and "depth" in tasks:
            init_depth_bias(model, train_ds)
        torch.manual_seed(cfg.seed)  # dropout during scoring
        scores = disparse.snip_scores(model, _batches(cfg, train_ds, preset.score_batches), tasks, device)
    else:
        model = parent.model
        scores = disparse.magnitude_scores(model)
    masks, cal = disparse.calibrated_masks(model, scores, sparsity)
    apply_masks(model, masks)
    zeros = sum(int((~m).sum()) for m in masks.values())
    total = count_params(model)
    info = {"keep_ratio": cal.keep_ratio, "achieved_sparsity": weight_sparsity(model),
            "weight_sparsity": weight_sparsity(model), "params_before": total, "params_after": total - zeros,
            "param_sparsity": zeros / total, "macs_before": count_macs(model, input_shape),
            "macs_after": count_macs(model, input_shape), "input_shape": list(input_shape),
            "macs_note": "unstructured: zeroed weights are still computed", "score_batches": preset.score_batches,
            "pruned_tensors": len(prunable_weights(model))}
    return model, [MaskCallback(masks)], info


def _prune_structured(parent: Any, method: str, sparsity: float, preset: PrunePreset, cfg: TrainConfig,
                      train_ds: Any, device: torch.device, input_shape: tuple[int, ...]
                      ) -> tuple[MultiTaskModel, list[Any], dict[str, Any]]:
    from mtlx_core.models import build_model

    model = parent.model.to(device)
    plan = channel_plan(model)
    if method == "netslim":
        if not cfg.bn_l1:
            logger.warning("parent %s was trained without BN L1 sparsity (bn_l1 = 0): Network Slimming expects "
                           "a sparsity-trained parent", parent.run_id)
        keep = netslim.netslim_keep(model, plan, sparsity)
        extra: dict[str, Any] = {"bn_l1": cfg.bn_l1}
    else:
        images = (b["image"] for b in _batches(cfg, train_ds, preset.rank_batches))
        ranks = hrank.feature_map_ranks(model, plan, images, device)
        keep = hrank.hrank_keep(plan, ranks)
        extra = {"round": hrank.hrank_round(sparsity), "rank_batches": preset.rank_batches}
    pruned = prune_channels(model, plan, keep)
    dense = build_model(**model.arch_config).to(device)  # the unpruned architecture: sizes "before" refer to it
    dense_plan = channel_plan(dense)
    needs = "bn" if method == "netslim" else "rank"
    total = dense_plan.prunable_channels(needs)
    left = channel_plan(pruned).prunable_channels(needs)
    info = {**_size_record(dense, pruned, input_shape), "channels_removed": 1.0 - left / total,
            "prunable_channels_before": total, "prunable_channels_after": left,
            "round_channels_removed": removed_share(plan, keep, needs), **extra}
    info["achieved_sparsity"] = info["param_sparsity"]
    return pruned, [], info


def _finetune_config(parent_cfg: TrainConfig, preset: PrunePreset, iterations: int | None,
                     device: str | None) -> TrainConfig:
    changes = dict(preset.finetune)
    if iterations is not None:
        if iterations <= 0:
            raise ValueError(f"--finetune-iters must be positive, got {iterations}")
        changes["iterations"] = iterations
        every = changes.get("checkpoint_every", parent_cfg.checkpoint_every)
        changes["checkpoint_every"] = min(every, max(1, iterations // 2))
    if device is not None:
        changes["device"] = device
    return dataclasses.replace(parent_cfg, **changes)


def prune_run(parent_id: str, method: str, sparsity: float, *, variant: str | None = None,
              finetune_iterations: int | None = None, preset: str | None = None,
              models_dir: str | Path = DEFAULT_MODELS_DIR, device: str | None = None, data_root: str | None = None,
              progress: bool = False) -> TrainResult:
    """Prune run ``parent_id`` with ``method`` at ``sparsity`` and fine-tune it; returns the new run."""
    variant = check_request(method, sparsity, variant)
    parent_path = run_dir(parent_id, models_dir)
    if not is_complete(parent_path):
        load_run(parent_id, models_dir)  # raises the clear error (missing: lists the available runs)
    parent_config = read_json(parent_path / "config.json")
    if parent_config.get("kind", "train") != "train":
        raise RunError(f"run {parent_id!r} is a {parent_config.get('kind')} run: prune a dense training run "
                       f"(HRank chains its rounds itself)")
    if not isinstance(parent_config.get("train"), dict) or "architecture" not in parent_config:
        raise RunError(f"{parent_path / 'config.json'} has no 'train' / 'architecture' entry")
    parent_cfg = TrainConfig.from_dict(parent_config["train"])
    if data_root is not None:
        parent_cfg = dataclasses.replace(parent_cfg, data_root=str(data_root))
    arch = parent_config["architecture"]["arch"]
    if (method, arch) not in SUPPORTED:
        raise ValueError(f"method {method!r} does not support architecture {arch!r}; supported pairs: "
                         f"{sorted(SUPPORTED)}")
    if preset is not None:
        p = get_prune_preset(preset)
        if (p.parent_preset, p.method, p.variant) != (parent_cfg.preset, method, variant):
            raise ValueError(f"preset {preset!r} prunes {p.parent_preset} runs with {p.method}"
                             f"{' ' + p.variant if p.variant else ''}; run {parent_id!r} is a {parent_cfg.preset} "
                             f"run and {method}{' ' + variant if variant else ''} was requested")
    else:
        p = (find_prune_preset(parent_cfg.preset, method, variant)
             or default_preset(parent_cfg.preset, parent_cfg.iterations, method, variant))
    ft = _finetune_config(parent_cfg, p, finetune_iterations, device)
    root_id = parent_id
    if method == "hrank" and hrank.hrank_round(sparsity) > 1:
        previous = hrank.ROUND_SPARSITIES[hrank.hrank_round(sparsity) - 2]
        parent_id = prune_run(root_id, method, previous, finetune_iterations=finetune_iterations, preset=preset,
                              models_dir=models_dir, device=device, data_root=data_root, progress=progress).run_id
    run_id = _run_id(parent_cfg, parent_id, method, variant, sparsity, ft, p)
    if is_complete(run_dir(run_id, models_dir)):
        logger.info("pruned run %s already exists", run_id)
        return train(ft, models_dir, run_id=run_id)
    parent = None if variant == "static" else load_run(parent_id, models_dir, device="cpu")
    dev = resolve_device(ft.device)
    train_ds, _ = prepare_data(ft)
    input_shape = tuple(train_ds[0]["image"].shape)
    if method == "disparse":
        model, callbacks, info = _prune_disparse(parent, ft, variant or "", sparsity, p, train_ds, dev, input_shape)
    else:
        model, callbacks, info = _prune_structured(parent, method, sparsity, p, ft, train_ds, dev, input_shape)
    pruning = {"method": method, "variant": variant, "target_sparsity": float(sparsity),
               "structured": STRUCTURED[method], "preset": p.name, "root_parent_id": root_id,
               "finetune": {"optimizer": "adam", "iterations": ft.iterations, "lr": ft.lr, "lr_step": ft.lr_step,
                            "lr_gamma": ft.lr_gamma, "batch_size": ft.batch_size, "weight_decay": ft.weight_decay,
                            "bn_l1": ft.bn_l1, "weighting": ft.weighting,
                            "from": "dense initialisation" if variant == "static" else "parent weights"},
               **info}
    logger.info("%s %s%s at %.4g: achieved %.4f, params %d -> %d, MACs %d -> %d", parent_id, method,
                f" ({variant})" if variant else "", sparsity, pruning["achieved_sparsity"], pruning["params_before"],
                pruning["params_after"], pruning["macs_before"], pruning["macs_after"])
    return train(ft, models_dir, model=model, callbacks=callbacks, run_id=run_id, progress=progress,
                 extra_config={"kind": "prune", "parent_id": parent_id, "pruning": pruning})
