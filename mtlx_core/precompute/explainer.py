"""One model's explanations of an image batch: each of its explainers (``ExplainSettings.explainers_for``; the
gradient CAMs from one backward, ``mtlx_core.explain.explainers.explain_all``) at its primary layers (per task),
every faithfulness metric with its orderings on every explainer's maps (``mtlx_core.faithfulness``), the dense
model's target draw, and the ablation layers (Grad-CAM; the rows of precompute's ``targets``, ``explain`` and
``layer`` units, ``mtlx_core.precompute.units``).

Public API::

    plan = layer_plan(model, tasks, settings, arm_id)   # LayerPlan: primary label per task, ablation labels
    ex = ModelExplainer(run, tasks, settings, device, arm_id)
    ex.draw_rows(model_id, batches, TargetDraw(k, seed))  # target_draws rows
    ex.run_batch(model_id, batch, sps, slic_key, wanted, dense, explainers=("gradcam", "gradcampp"))
    #   predictions, explanations and faithfulness of each explainer, similarity (Grad-CAM's maps)
    ex.run_layer(model_id, batch, sps, slic_key, layer, wanted)   # explanations, faithfulness of one ablation layer
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mtlx_core.explain.explainers import explain_all, get_explainer
from mtlx_core.explain.fastforward import FastForward, ForwardSettings
from mtlx_core.explain.gradcam import Explanation
from mtlx_core.explain.similarity import map_similarity
from mtlx_core.explain.superpixels import Superpixels
from mtlx_core.explain.target_draw import TargetDraw, draw_targets
from mtlx_core.faithfulness.engine import Engine, EngineSettings
from mtlx_core.faithfulness.evaluate import FamilySettings, evaluate
from mtlx_core.models.layers import check_layers, layer_label, registered_layers, resolve_layer_name
from mtlx_core.precompute.faith_rows import faith_row, metric_sets
from mtlx_core.precompute.presets import ExplainSettings
from mtlx_core.precompute.units import Batch, DenseMaps
from mtlx_core.runs import LoadedRun
from mtlx_core.store.codec import encode_array
from mtlx_core.tasks import Task
from mtlx_core.tasks.base import ExplanationTarget, ScoreOptions
from mtlx_core.version import code_version


@dataclass(frozen=True)
class LayerPlan:
    """Where a model is explained: the primary layer's label per task, and the ablation layers (labels) per
    task (a task's primary layer is not repeated among its ablation layers)."""

    primary: dict[str, str]
    ablation: dict[str, list[str]]

    @property
    def ablation_layers(self) -> list[str]:
        """Every ablation label of any task, in registry order."""
        return list(dict.fromkeys(x for labels in self.ablation.values() for x in labels))


def layer_plan(model: torch.nn.Module, tasks: Any, settings: ExplainSettings, arm_id: str | None = None
               ) -> LayerPlan:
    arch = getattr(model, "arch_name", "") or type(model).__name__
    primary = {}
    for t in tasks:
        given = settings.primary_layer(arch, t, arm_id)
        primary[t] = layer_label(model, resolve_layer_name(model, given, t))
    check_layers(model, sorted(set(primary.values())), list(tasks))
    registered = settings.ablation_for(list(registered_layers(model)))
    check_layers(model, registered, list(tasks))
    return LayerPlan(primary, {t: [x for x in registered if x != primary[t]] for t in tasks})


class ModelExplainer:
    """A loaded model with its faithfulness engines (built once, reused by every batch of the model).

    Every image is processed alone (its clean forward, Grad-CAM and perturbation forwards), so each stored
    number of an image is the same whichever images share its batch (D18)."""

    def __init__(self, run: LoadedRun, tasks: dict[str, Task], settings: ExplainSettings, device: str,
                 arm_id: str | None = None) -> None:
        self.run, self.tasks, self.settings = run, tasks, settings
        self.model = run.model.to(device).eval()
        self.device = device
        self.plan = layer_plan(self.model, tasks, settings, arm_id)
        self.ablation = self.plan.ablation_layers
        fwd = ForwardSettings(trim_tasks=settings.trim_tasks, batch1_numerics=settings.batch1_numerics,
                              fold_bn=settings.fold_bn, channels_last=settings.channels_last,
                              rounding=settings.rounding)
        self.fwd = FastForward(self.model, fwd)
        self.metric_sets = metric_sets(settings)
        self.family = FamilySettings(settings.orderings, settings.n_random, settings.seed,
                                     EngineSettings(memory_budget_mb=settings.memory_budget_mb, forward=fwd,
                                                    gpu_share=settings.gpu_share))
        self.engines = {floor: Engine(self.model, tasks, dataclasses.replace(
            self.family.engine, score=ScoreOptions(floor)), forward=self.fwd) for floor in settings.depth_floors}

    def targets(self, out: dict[str, torch.Tensor], wanted: dict[tuple[int, str], set[int]] | None
                ) -> dict[str, list[list[ExplanationTarget]]]:
        """Targets per task and image: all of the clean prediction's, or only ``wanted`` ids (the dense
        model's drawn targets, ``target_draws``)."""
        result: dict[str, list[list[ExplanationTarget]]] = {}
        for name, task in self.tasks.items():
            per_image = []
            for i in range(out[name].shape[0]):
                found = task.explanation_targets(out[name][i].detach().cpu())
                if wanted is not None:
                    found = [t for t in found if t.target_id in wanted.get((i, name), set())]
                per_image.append(found)
            result[name] = per_image
        return result

    def layer_path(self, task: str, layer: str | None = None) -> str:
        return resolve_layer_name(self.model, self.plan.primary[task] if layer is None else layer, task)

    def clean_forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Clean predictions, each image forwarded alone (batch-1 numerics: targets never depend on the batch)."""
        x = batch.images.to(self.device)
        with torch.inference_mode():
            outs = [self.model(x[i:i + 1]) for i in range(x.shape[0])]
        return {t: torch.cat([o[t] for o in outs]).float() for t in outs[0]}

    def draw_rows(self, model_id: str, batches: list[Batch], draw: TargetDraw) -> list[dict[str, Any]]:
        """``target_draws`` rows: every candidate target of every image of ``batches`` (in sample order) and
        whether the seeded stratified draw took it (``mtlx_core.explain.target_draw``)."""
        cands: dict[str, list[list[ExplanationTarget]]] = {name: [] for name in self.tasks}
        keys: list[str] = []
        for b in batches:
            found = self.targets(self.clean_forward(b), None)
            for name in self.tasks:
                cands[name] += found[name]
            keys += b.image_ids
        cv, rows = code_version(), []
        for name in self.tasks:
            drawn = draw_targets(cands[name], draw.k_for(name), draw.seed, keys, name)
            for pos, (iid, all_t, took) in enumerate(zip(keys, cands[name], drawn, strict=True)):
                took_ids = {t.target_id for t in took}
                rows += [{"model_id": model_id, "image_id": iid, "task": name, "target_id": t.target_id,
                          "target": t.name, "n_pixels": t.n_pixels, "drawn": t.target_id in took_ids,
                          "position": pos, "rule": draw.rule_for(name), "k": draw.k_for(name), "seed": draw.seed,
                          "code_version": cv}
                         for t in all_t]
        return rows

    def _explain_all(self, x: torch.Tensor, targets: dict[str, list[list[ExplanationTarget]]],
                     layer: str | None, explainers: tuple[str, ...] = ("gradcam",)) -> list[Explanation]:
        """Maps of every target by each explainer, one image at a time (its maps never depend on the other
        images); the gradient CAMs of an image and task share one forward and one backward."""
        chosen = [get_explainer(n) for n in explainers]
        exps: list[Explanation] = []
        for name, task in self.tasks.items():
            if layer is not None and layer not in self.plan.ablation[name]:
                continue  # the task's primary layer: its rows are the primary unit's
            for i, found in enumerate(targets[name]):
                if found:
                    by_name = explain_all(chosen, self.model, x[i:i + 1], task, self.layer_path(name, layer),
                                          targets=[found])
                    exps += [dataclasses.replace(e, image_index=i) for n in explainers for e in by_name[n]]
        return exps

    def _faithfulness(self, model_id: str, batch: Batch, x: torch.Tensor, exps: list[Explanation],
                      sps: list[Superpixels], layer: str | None, slic_settings_key: str,
                      orderings: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Rows of every metric (IROF once per fill mode) and every depth floor."""
        if not exps:
            return []
        family = self.family if orderings is None else dataclasses.replace(self.family, orderings=orderings)
        role = "primary" if layer is None else "ablation"
        # the layer ablation ranks layers with IROF (the study's fill) and the localisation metrics, at the
        # primary depth floor: the other metrics and variants at every layer would multiply the forwards
        sets = self.metric_sets if layer is None else [[m for m in self.metric_sets[0]
                                                        if m.name == "irof" or m.kind == "map"]]
        floors = self.settings.depth_floors if layer is None else self.settings.depth_floors[:1]
        cv, rows = code_version(), []
        for f, floor in enumerate(floors):
            items = exps if f == 0 else [e for e in exps if e.task == "depth"]
            for metrics in sets:
                use = [m for m in metrics if f == 0 or m.kind != "map"]
                if not items or not use:
                    continue
                results = evaluate(self.model, x, items, self.tasks, use, family, sps, self.engines[floor])
                rows += [faith_row(model_id, batch.image_ids[r.image_index], r,
                                   self.layer_path(r.task, layer), layer or self.plan.primary[r.task], role, cv)
                         for r in results]
        return rows

    def run_batch(self, model_id: str, batch: Batch, sps: list[Superpixels], slic_settings_key: str,
                  wanted: dict[tuple[int, str], set[int]] | None,
                  dense: DenseMaps | None, explainers: tuple[str, ...] = ("gradcam",)
                  ) -> dict[str, list[dict[str, Any]]]:
        """Primary layer: predictions, each explainer's maps, every metric with every ordering on each
        explainer's maps (the random orderings once per target), similarity of Grad-CAM's maps to the dense
        model's."""
        x = batch.images.to(self.device)
        out = self.clean_forward(batch)
        rows: dict[str, list[dict[str, Any]]] = {"predictions": _prediction_rows(model_id, batch, out, self.tasks)}
        exps = self._explain_all(x, self.targets(out, wanted), None, explainers)
        cv = code_version()
        rows["explanations"] = [_explanation_row(model_id, batch, e, self.plan.primary[e.task], "primary", cv)
                                for e in exps]
        rows["faithfulness"] = self._faithfulness(model_id, batch, x, exps, sps, None, slic_settings_key)
        if dense is not None:
            cams = [e for e in exps if e.saliency_method == "gradcam"]
            rows["similarity"] = _similarity_rows(model_id, batch, cams, dense, self.settings.topk, cv)
        return rows

    def run_layer(self, model_id: str, batch: Batch, sps: list[Superpixels], slic_settings_key: str,
                  layer: str, wanted: dict[tuple[int, str], set[int]]) -> dict[str, list[dict[str, Any]]]:
        """One ablation layer on the primary unit's targets: Grad-CAM and its most-relevant-first curves (the
        margin over chance uses the primary unit's random orderings, which do not depend on the layer)."""
        x = batch.images.to(self.device)
        exps = self._explain_all(x, self.targets(self.clean_forward(batch), wanted), layer)
        cv = code_version()
        return {"explanations": [_explanation_row(model_id, batch, e, layer, "ablation", cv) for e in exps],
                "faithfulness": self._faithfulness(model_id, batch, x, exps, sps, layer, slic_settings_key,
                                                   ("morf",))}


def _explanation_row(model_id: str, batch: Batch, e: Explanation, label: str, role: str, cv: str
                     ) -> dict[str, Any]:
    return {"model_id": model_id, "image_id": batch.image_ids[e.image_index], "task": e.task,
            "target_id": e.target_id, "target": e.target_name, "layer": e.layer, "n_pixels": e.target.n_pixels,
            "is_zero": bool(e.is_zero), "saliency": encode_array(e.map_input.astype(np.float32)),
            "saliency_layer": encode_array(e.map_layer.astype(np.float32)), "code_version": cv,
            "settings": json.dumps({**e.settings.to_dict(), "target_rule": e.target.rule,
                                    "edges": list(e.target.edges)}), "layer_label": label, "layer_role": role,
            "explainer": e.saliency_method}


def _prediction_rows(model_id: str, batch: Batch, out: dict[str, torch.Tensor], tasks: dict[str, Task]
                     ) -> list[dict[str, Any]]:
    """Each image's clean prediction per task in the task's stored form (``Task.stored_prediction``)."""
    return [{"model_id": model_id, "image_id": iid, "task": name,
             "prediction": encode_array(tasks[name].stored_prediction(pred[i]))}
            for name, pred in out.items() for i, iid in enumerate(batch.image_ids)]


def _similarity_rows(model_id: str, batch: Batch, exps: list[Explanation], dense: DenseMaps, topk: float,
                     cv: str) -> list[dict[str, Any]]:
    rows = []
    for e in exps:
        iid = batch.image_ids[e.image_index]
        ref = dense.maps.get((iid, e.task, e.target_id))
        if ref is None:
            continue
        s = map_similarity(e.map_input, ref, topk)
        rows.append({"model_id": model_id, "reference_id": dense.model_id, "image_id": iid, "task": e.task,
                     "target_id": e.target_id, "layer": e.layer, "spearman": s.spearman, "ssim": s.ssim,
                     "topk_iou": s.topk_iou, "topk": s.topk, "topk_pixels": s.topk_pixels, "code_version": cv})
    return rows
