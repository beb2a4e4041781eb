"""``python -m mtlx_core.precompute --preset P --plan [--gpus N ...]``: the study's unit DAG, its critical path and
the predicted wall time on N GPUs, with and without packing; computes nothing and reads no data.

The DAG is the planner's (``StudyPlanner`` on planning batches of the preset's image count and size); unit costs
come from a store's ``units`` journal (``--store`` when it exists: measured means per kind and arm) or are estimated
from MACs and sample counts (``costs.CostModel``); the schedule is ``schedule.simulate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtlx_core.precompute.costs import CostModel, explain_facts
from mtlx_core.precompute.nodes import Node
from mtlx_core.precompute.planner import StudyPlanner
from mtlx_core.precompute.presets import StudyPreset
from mtlx_core.precompute.schedule import PACKING_SHARES, PlanNode, format_plan


def plan_nodes(preset: StudyPreset, images: int | None = None, seeds: int | None = None,
               arms: list[str] | None = None) -> list[PlanNode]:
    """The preset's nodes with the facts the cost model needs (``costs`` module docstring)."""
    from mtlx_core.precompute.runner import Runner

    r = Runner(preset, Path("unused.duckdb"), Path("unused-models"), device="cpu", images=images, progress=False,
               arms=arms, seeds=seeds)
    planner = StudyPlanner(r, dry=True)
    order = planner.build()
    facts = explain_facts(preset.explain)
    return [PlanNode(n.key, n.kind, n.arm_id, n.deps, n.priority, _info(planner, n, facts)) for n in order]


def _info(planner: StudyPlanner, node: Node, facts: dict[str, Any]) -> dict[str, Any]:
    a = planner.arms[node.arm_id]
    s = planner.r.settings
    cfg = a.cfgs[node.args.get("seed", 0)]
    info: dict[str, Any] = {"arch": cfg.arch, "dataset": cfg.dataset, "input_shape": list(a.input_shape),
                            "tasks": list(cfg.tasks), "width": cfg.width, "arch_kwargs": dict(cfg.arch_kwargs)}
    batch = node.args.get("batch")
    if batch is not None:
        info["images"] = len(batch.indices)
    if node.kind == "train":
        info.update(iterations=cfg.iterations, batch_size=cfg.batch_size)
    elif node.kind in ("prune", "control"):
        info.update(iterations=_finetune_iterations(a.arm, cfg), batch_size=cfg.batch_size,
                    sparsity=node.args.get("level", 0.0))
    elif node.kind == "targets":
        info["images"] = sum(len(b.indices) for b in a.batches)
    elif node.kind in ("explain", "layer"):
        level = node.args.get("level")
        is_dense = node.args.get("ref") is None and node.kind == "explain"
        info.update(facts, explainers=list(s.explainers_for(is_dense, level)), metrics=list(s.metric_names()),
                    targets_per_image=s.max_targets)
        if node.kind == "layer":
            info["layers"] = max(1, len(s.ablation_layers))
    elif node.kind == "sanity":
        info.update(images=min(planner.r.preset.sanity.images if planner.r.preset.sanity else 1,
                               len(a.batches[0].indices)), explainers=list(s.explainers))
    return info


def _finetune_iterations(arm: Any, cfg: Any) -> int:
    from mtlx_core.prune.presets import default_preset, find_prune_preset, get_prune_preset

    if arm.finetune_iterations:
        return int(arm.finetune_iterations)
    p = (get_prune_preset(arm.prune_preset) if arm.prune_preset else
         find_prune_preset(cfg.preset, arm.method, arm.variant)
         or default_preset(cfg.preset, cfg.iterations, arm.method, arm.variant))
    return int(p.finetune.get("iterations", cfg.iterations))


def plan_report(preset: StudyPreset, gpus: list[int], shares: dict[str, float], store: Path | None = None,
                images: int | None = None, seeds: int | None = None, arms: list[str] | None = None,
                device: str = "gpu") -> str:
    """The printed plan: costs measured in ``store`` (when it exists) or estimated for ``device`` (cpu/gpu)."""
    nodes = plan_nodes(preset, images, seeds, arms)
    model = CostModel.from_store(store, device) if store is not None and store.is_file() else CostModel(device)
    packing = {**PACKING_SHARES, **shares}
    head = (f"plan of preset {preset.name}: {len(nodes)} units; costs "
            + (f"measured in {store}" if model.store else f"estimated for {device} (no store)"))
    body = format_plan(nodes, model.costs(nodes), gpus or [1], packing,
                       sources={n.key: model.source(n) for n in nodes})
    return head + "\n" + body

