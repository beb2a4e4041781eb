"""The random-saliency IROF baseline of every target of every task from ONE perturbation sequence per image.

``irof.irof`` already shares the random curve's perturbed images between the targets of one task (same image,
same order: ``PrefixIndex``), but forwards them once per task through that task's trimmed graph. The random
map depends only on the seed and the image size (``perturbation.random_saliency``), so the sequence is the
same for every task: here it is forwarded once through a graph of all task outputs
(``FastForward(...)(ALL_TASKS, x)``, from the same trace as the per-task graphs when the explainer's
``FastForward`` is passed in: one trace per model) and every target of every task is scored on it. The curves
equal ``irof``'s ``random`` curves up to float rounding of the two graphs (a test checks it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mtlx_core.explain.fastforward import ALL_TASKS, FastForward
from mtlx_core.explain.irof import IrofResult, IrofSettings, SaliencyItem
from mtlx_core.explain.perturbation import (
    CurveTables,
    perturbed_images,
    quantus_fills,
    random_saliency,
    segment_order,
)
from mtlx_core.explain.superpixels import Superpixels
from mtlx_core.tasks.base import Task

_trapezoid = getattr(np, "trapezoid", None) or np.trapz


class SharedRandom:
    """Random-baseline curves of all tasks of one model; build once per model, call per image batch."""

    def __init__(self, model: nn.Module, tasks: Mapping[str, Task], settings: IrofSettings,
                 forward: FastForward | None = None) -> None:
        """``forward``: the explainer's ``FastForward`` of ``model`` (shares its trace); ``None``: a new one."""
        self.tasks = dict(tasks)
        self.settings = settings
        self.model = model
        self.fwd = forward or FastForward(model, settings.forward)
        self.slices: dict[str, slice] = {}

    def _split(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        return {t: out[:, s] for t, s in self.slices.items()}

    def _set_slices(self, images: torch.Tensor) -> None:
        """Channel range of each task in ``ALL_TASKS`` outputs (the model's output order)."""
        with torch.inference_mode():
            out = self.model.eval()(images[:1])
        start = 0
        for name, y in out.items():
            if name in self.tasks:
                self.slices[name] = slice(start, start + y.shape[1])
            start += y.shape[1]
        missing = sorted(set(self.tasks) - set(self.slices))
        if missing:
            raise ValueError(f"the model has no output for task(s) {missing}; its outputs: {', '.join(out)}")

    def _chunk(self, images: torch.Tensor) -> int:
        if self.settings.chunk_size is not None:
            return max(1, self.settings.chunk_size)
        per = self.fwd.activation_bytes_per_image(ALL_TASKS, images[:1])
        return int(min(64, max(1, self.settings.memory_budget_mb * 2**20 // per)))

    def __call__(self, images: torch.Tensor, items: Sequence[SaliencyItem],
                 superpixels: Sequence[Superpixels]) -> list[IrofResult]:
        """One ``random`` IrofResult per item (same statuses and normalisation as ``irof``)."""
        s = self.settings
        device = images.device
        if not self.slices:
            self._set_slices(images)
        chunk = self._chunk(images)
        clean = self._split(torch.cat([self.fwd(ALL_TASKS, images[i:i + chunk]) for i in range(0, len(images), chunk)]))
        clean_scores = np.array([float(self.tasks[it.target.task].irof_scores(
            clean[it.target.task][it.image_index][None], clean[it.target.task][it.image_index][None],
            it.target.mask[None].to(device), torch.tensor([it.target.target_id], device=device))[0])
            for it in items])
        status = []
        for r, it in enumerate(items):
            st = "single_segment" if superpixels[it.image_index].n_segments == 1 else "ok"
            if it.target.n_pixels == 0:
                st = "empty_target"
            elif not np.isfinite(clean_scores[r]) or clean_scores[r] == 0:
                st = "zero_clean_score"
            status.append(st)
        live = [r for r, st in enumerate(status) if st in ("ok", "single_segment")]
        imgs = sorted({items[r].image_index for r in live})
        scores: dict[int, np.ndarray] = {r: np.full(superpixels[items[r].image_index].n_segments, np.nan)
                                         for r in live}
        if imgs:
            np_images = images.detach().cpu().numpy()
            orders, fills = [], []
            for i in imgs:
                sp = superpixels[i]
                order = segment_order(random_saliency(s.seed, sp.labels.shape), sp.labels, sp.n_segments)
                orders.append(order)
                fills.append(quantus_fills(np_images[i], sp.labels, order) if s.fill_mode == "quantus" else None)
            tables = CurveTables.build(orders, fills, imgs)
            labels = torch.stack([torch.from_numpy(sp.labels) for sp in superpixels]).to(device)
            steps = [(q, k) for q, o in enumerate(orders) for k in range(1, len(o) + 1)]
            by_image: dict[int, list[int]] = {}
            for r in live:
                by_image.setdefault(items[r].image_index, []).append(r)
            for start in range(0, len(steps), chunk):
                part = steps[start:start + chunk]
                x = perturbed_images(images, labels, tables, torch.tensor([q for q, _ in part]),
                                     torch.tensor([k for _, k in part]), s.fill_mode)
                pred = self._split(self.fwd(ALL_TASKS, x))
                self._score(part, imgs, by_image, items, pred, clean, scores, device)
        return [self._result(r, it, superpixels, clean_scores, status, scores) for r, it in enumerate(items)]

    def _score(self, part: list[tuple[int, int]], imgs: list[int], by_image: dict[int, list[int]],
               items: Sequence[SaliencyItem], pred: dict[str, torch.Tensor], clean: dict[str, torch.Tensor],
               scores: dict[int, np.ndarray], device: torch.device) -> None:
        for task_name, task in self.tasks.items():
            rows = [(p, r, k) for p, (q, k) in enumerate(part) for r in by_image.get(imgs[q], [])
                    if items[r].target.task == task_name]
            if not rows:
                continue
            src = torch.tensor([p for p, _, _ in rows], device=device)
            img = torch.tensor([items[r].image_index for _, r, _ in rows], device=device)
            masks = torch.stack([items[r].target.mask for _, r, _ in rows]).to(device)
            tids = torch.tensor([items[r].target.target_id for _, r, _ in rows], device=device)
            vals = task.irof_scores(pred[task_name][src], clean[task_name][img], masks, tids).double().cpu().numpy()
            for (_, r, k), v in zip(rows, vals, strict=True):
                scores[r][k - 1] = v

    def _result(self, r: int, item: SaliencyItem, superpixels: Sequence[Superpixels], clean_scores: np.ndarray,
                status: list[str], scores: dict[int, np.ndarray]) -> IrofResult:
        sp = superpixels[item.image_index]
        if r in scores:
            curve = scores[r] / clean_scores[r]
            aoc = float(len(curve) - _trapezoid(curve, dx=1))
        else:
            curve, aoc = np.full(0, np.nan), float("nan")
        return IrofResult(
            image_index=item.image_index, task=item.target.task, target_id=item.target.target_id,
            target_name=item.target.name, saliency_method=getattr(item, "saliency_method", "gradcam"),
            ordering="random", curve=curve, aoc=aoc, aoc_norm=aoc / sp.n_segments, n_segments=sp.n_segments,
            clean_score=float(clean_scores[r]), status=status[r], seed=self.settings.seed, settings=self.settings,
            slic=sp.settings)
