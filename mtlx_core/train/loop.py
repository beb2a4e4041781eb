"""The training loop: deterministic batches, equal/FAMO weighting, resumable checkpoints, run folders."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from mtlx_core.data.dataset import DatasetError, MTLDataset
from mtlx_core.data.layout import get_dataset_spec
from mtlx_core.runs import (
    CONFIG_FILE,
    DEFAULT_MODELS_DIR,
    METRICS_FILE,
    MODEL_FILE,
    STATE_FILE,
    RunError,
    atomic_torch_save,
    atomic_write_json,
    is_complete,
    read_json,
    run_dir,
    safe_torch_load,
)
from mtlx_core.tasks import Task, build_tasks
from mtlx_core.train.batches import training_batches
from mtlx_core.train.config import TrainConfig, synth_cache
from mtlx_core.train.evaluate import compare_to_baselines, evaluate, evaluate_trivial, fit_trivial_predictors
from mtlx_core.version import code_version
from mtlx_core.weighting import Weighting, build_weighting

if TYPE_CHECKING:
    from mtlx_core.models.base import MultiTaskModel

logger = logging.getLogger(__name__)


class TrainCallback(Protocol):
    """Training hooks: regularisers (Network Slimming's BN L1, built from the config by the pruning registry)
    and pruning masks. ``after_step`` gets the learning rate the optimizer step just used."""

    def after_backward(self, model: nn.Module, iteration: int) -> None: ...
    def after_step(self, model: nn.Module, iteration: int, lr: float) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    run_id: str
    path: Path
    metrics: dict[str, Any]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"invalid device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available")
    return dev


def prepare_data(cfg: TrainConfig) -> tuple[MTLDataset, MTLDataset]:
    """The train and val splits; demo presets render the synthetic rooms when they are missing."""
    root = Path(cfg.data_root)
    if cfg.synth is not None and (not root.exists() or cfg.data_root == synth_cache(cfg.synth)):
        # generated when missing; the preset's own cache folder is also checked against the request (a clear
        # error if it holds something else), a folder passed with --data is used as it is
        from mtlx_core.data.synth import generate_synth

        if not root.exists():
            logger.info("synthetic data missing at %s: generating it", root)
        s = cfg.synth
        generate_synth(root, n_train=s["n_train"], n_val=s["n_val"], height=s["height"], width=s["width"],
                       seed=s["seed"])
    if not root.is_dir():
        raise DatasetError(f"data folder {root} does not exist: expected the {cfg.dataset} dataset in the MTAN "
                           f"layout there (convert it with `python -m mtlx_core.data`, or pass --data)")
    spec = get_dataset_spec(cfg.dataset)
    augment = None
    if cfg.augment:
        from mtlx_core.data.augment import JointAugment

        augment = JointAugment(spec.depth_kind)
    train = MTLDataset(root, spec, "train", cfg.tasks)
    val = MTLDataset(root, spec, "val", cfg.tasks)
    train.seeded_augment = augment  # type: ignore[attr-defined]
    return train, val


#: optimizer name (``TrainConfig.optimizer``) -> builder; SGD uses Network Slimming's momentum 0.9
OPTIMIZERS: dict[str, Callable[[Iterable[nn.Parameter], TrainConfig], torch.optim.Optimizer]] = {
    "adam": lambda params, cfg: torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
    "sgd": lambda params, cfg: torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay),
}


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    try:
        make = OPTIMIZERS[cfg.optimizer]
    except KeyError:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}") from None
    return make(model.parameters(), cfg)


def config_callbacks(cfg: TrainConfig) -> list[TrainCallback]:
    """The training callbacks a configuration asks for (BN L1 sparsity), from the pruning registry."""
    from mtlx_core.prune.registry import config_callbacks as from_registry

    return from_registry(cfg)


def init_depth_bias(model: nn.Module, train_ds: MTLDataset) -> None:
    """Set the bias of the depth head's output convolution(s) so the initial prediction is the training
    split's mean valid depth (summed ASPP branches share it). Without it, Adam needs thousands of steps to
    move a zero-initialised output to metres, which dominates short CPU-sized runs."""
    from mtlx_core.train.evaluate import fit_trivial_predictors

    mean = float(fit_trivial_predictors(train_ds, max_frames=64)["depth"])
    biases = [m.bias for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.out_channels == 1
              and "depth" in name.split(".") and m.bias is not None]
    with torch.no_grad():
        for bias in biases:
            bias.fill_(mean / len(biases))
    logger.info("depth output bias initialised to the mean training depth %.3f (%d conv)", mean, len(biases))


def build_for(cfg: TrainConfig, tasks: dict[str, Task]) -> MultiTaskModel:
    from mtlx_core.models import build_model

    return build_model(cfg.arch, {n: t.out_channels for n, t in tasks.items()}, cfg.width, **cfg.arch_kwargs)


@contextlib.contextmanager
def training_threads(cfg: TrainConfig) -> Iterator[None]:
    """Run the block with ``cfg.threads`` torch CPU threads (unchanged when None), restored afterwards."""
    old = torch.get_num_threads()
    if cfg.threads is not None and cfg.threads != old:
        torch.set_num_threads(cfg.threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def train(cfg: TrainConfig, models_dir: str | Path = DEFAULT_MODELS_DIR, *, model: MultiTaskModel | None = None,
          callbacks: Sequence[TrainCallback] = (), run_id: str | None = None,
          extra_config: dict[str, Any] | None = None, progress: bool = True) -> TrainResult:
    """Train (or resume, or return the finished run) and save ``models_dir/<run_id>/``, with ``cfg.threads``
    torch threads (``training_threads``)."""
    with training_threads(cfg):
        return _train(cfg, models_dir, model, callbacks, run_id, extra_config, progress)


def _train(cfg: TrainConfig, models_dir: str | Path, model: MultiTaskModel | None,
           callbacks: Sequence[TrainCallback], run_id: str | None, extra_config: dict[str, Any] | None,
           progress: bool) -> TrainResult:
    run_id = run_id or cfg.run_id()
    path = run_dir(run_id, models_dir)
    if is_complete(path):
        logger.info("run %s is already complete in %s", run_id, path)
        return TrainResult(run_id, path, read_json(path / METRICS_FILE))
    device = resolve_device(cfg.device)
    train_ds, val_ds = prepare_data(cfg)
    tasks = build_tasks(train_ds.spec, cfg.tasks)
    torch.manual_seed(cfg.seed)
    if model is None:
        model = build_for(cfg, tasks)
        if cfg.depth_bias_init and "depth" in tasks:
            init_depth_bias(model, train_ds)
    model.to(device)
    callbacks = [*config_callbacks(cfg), *callbacks]
    opt = build_optimizer(model, cfg)
    step = cfg.lr_step or cfg.iterations + 1
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=cfg.lr_gamma)
    weighting = build_weighting(cfg.weighting, list(tasks), **cfg.weighting_kwargs)
    config = {"run_id": run_id, "kind": "train", "train": cfg.to_dict(), "tasks": list(tasks),
              "dataset": cfg.dataset, "architecture": dict(model.arch_config), "code_version": code_version(),
              "seed": cfg.seed, **(extra_config or {})}
    start, elapsed = 0, 0.0
    if (path / STATE_FILE).is_file():
        state = safe_torch_load(path / STATE_FILE)
        if state.get("fingerprint") != cfg.fingerprint():
            raise RunError(f"{path / STATE_FILE} belongs to a different configuration; delete {path} to retrain")
        from mtlx_core.models.surgery import resize_to_state_dict

        model = resize_to_state_dict(model, state["model"]).to(device)
        model.load_state_dict(state["model"])
        opt = build_optimizer(model, cfg)
        opt.load_state_dict(state["optimizer"])
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=cfg.lr_gamma)
        sched.load_state_dict(state["scheduler"])
        weighting.load_state_dict(state["weighting"])
        for cb, cb_state in zip(callbacks, state.get("callbacks", []), strict=False):
            cb.load_state_dict(cb_state)
        torch.set_rng_state(state["rng"])
        start, elapsed = int(state["iteration"]), float(state.get("elapsed", 0.0))
        logger.info("resuming %s from iteration %d", run_id, start)
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path / CONFIG_FILE, config)

    def save_state(iteration: int) -> None:
        atomic_torch_save(path / STATE_FILE, {
            "fingerprint": cfg.fingerprint(), "iteration": iteration, "elapsed": elapsed,
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "weighting": weighting.state_dict(), "callbacks": [cb.state_dict() for cb in callbacks],
            "rng": torch.get_rng_state()})

    loader = training_batches(train_ds, cfg.batch_size, cfg.seed, start, cfg.iterations,
                              getattr(train_ds, "seeded_augment", None), cfg.num_workers)
    bar = tqdm(loader, total=cfg.iterations, initial=start, desc=run_id, disable=not progress, unit="it",
               dynamic_ncols=True)
    needs_update = type(weighting).update is not Weighting.update  # FAMO re-forwards the batch
    model.train()
    t0, it = time.perf_counter(), start
    for it, batch in enumerate(bar, start=start):
        x = batch["image"].to(device, non_blocking=True)
        gts = {n: batch[n].to(device, non_blocking=True) for n in tasks}
        opt.zero_grad(set_to_none=True)
        out = model(x)
        losses = torch.stack([tasks[n].loss(out[n], gts[n]) for n in tasks])
        total = weighting.backward(losses)
        for cb in callbacks:
            cb.after_backward(model, it)
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        lr = float(opt.param_groups[0]["lr"])
        opt.step()
        for cb in callbacks:
            cb.after_step(model, it, lr)
        if needs_update:
            with torch.no_grad():
                out = model(x)
                weighting.update(torch.stack([tasks[n].loss(out[n], gts[n]) for n in tasks]))
        sched.step()
        per_task = {n[:3]: f"{float(v):.3f}" for n, v in zip(tasks, losses.detach(), strict=True)}
        bar.set_postfix(loss=f"{float(total):.3f}", **per_task)
        done = it + 1
        if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.iterations:
            logger.info("iteration %d validation: %s", done, evaluate(model, val_ds, tasks, device=device))
            model.train()
        if done % cfg.checkpoint_every == 0 or done == cfg.iterations:
            elapsed += time.perf_counter() - t0
            t0 = time.perf_counter()
            save_state(done)
    bar.close()
    elapsed += time.perf_counter() - t0
    return _finish(cfg, model, tasks, train_ds, val_ds, path, run_id, elapsed, device)


def _finish(cfg: TrainConfig, model: nn.Module, tasks: dict[str, Task], train_ds: MTLDataset,
            val_ds: MTLDataset, path: Path, run_id: str, elapsed: float,
            device: torch.device) -> TrainResult:
    model.eval()
    metrics = evaluate(model, val_ds, tasks, device=device)
    trivial = fit_trivial_predictors(train_ds)
    baselines = evaluate_trivial(trivial, val_ds, tasks)
    rows = compare_to_baselines(metrics, baselines)
    for r in rows:
        logger.info("%-12s %-12s model %.4f vs trivial %.4f: ratio %.3f (target %s) %s", r["task"], r["metric"],
                    r["model"], r["trivial"], r["ratio"], r["target"], "OK" if r["met"] else "NOT MET")
    n_images = cfg.iterations * cfg.batch_size
    result = {"metrics": metrics, "baselines": baselines, "comparison": rows, "iterations": cfg.iterations,
              "train_seconds": elapsed, "images_per_second": n_images / max(elapsed, 1e-9), "images_seen": n_images,
              "code_version": code_version()}
    atomic_torch_save(path / MODEL_FILE, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    atomic_write_json(path / METRICS_FILE, result)
    (path / STATE_FILE).unlink(missing_ok=True)
    logger.info("run %s saved in %s (%.1f s of training)", run_id, path, elapsed)
    return TrainResult(run_id, path, result)
