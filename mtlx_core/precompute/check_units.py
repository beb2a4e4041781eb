"""The runner's check units: the seeds' noise floor of map similarity and the dense models' sanity checks.

Functions of a :class:`~mtlx_core.precompute.runner.Runner` (its store, journal and settings), kept out of
``runner.py`` to keep it small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mtlx_core.explain.sanity import SanitySettings
from mtlx_core.models.layers import resolve_layer_name
from mtlx_core.precompute.explainer import layer_plan
from mtlx_core.precompute.plan import Clock
from mtlx_core.precompute.presets import ArmSpec
from mtlx_core.precompute.sanity_unit import sanity_key, sanity_rows
from mtlx_core.precompute.seed_noise import seed_similarity_rows
from mtlx_core.precompute.units import Batch, explain_tasks
from mtlx_core.runs import load_run
from mtlx_core.store.writer import UnitRows

if TYPE_CHECKING:
    from mtlx_core.precompute.runner import Runner


def seed_noise_units(r: Runner, arm: ArmSpec, dense_ids: list[str], image_ids: list[str]) -> None:
    """Every further seed's dense maps against the first seed's (the noise floor of map similarity)."""
    for dense_id in dense_ids[1:]:
        uid = f"seed_similarity:{dense_id}:{dense_ids[0]}"
        if r._is_done(uid):
            continue
        t = Clock()
        rows = seed_similarity_rows(r.w.con, dense_id, dense_ids[0], image_ids, r.settings.topk)
        r._commit(UnitRows(uid, "seed_similarity", {"similarity": rows}, arm.arm_id, dense_id,
                           {"reference": dense_ids[0], "images": len(image_ids)}, *t.spent()))


def sanity_unit(r: Runner, arm: ArmSpec, spec: Any, dense_id: str, batch: Batch, settings: SanitySettings) -> None:
    """The sanity checks of the dense model's explanations on the first images of the first batch (every
    explainer of the study, at the primary layers): one ``sanity`` unit."""
    run = load_run(dense_id, r.models_dir)
    tasks = explain_tasks(run, spec, r.settings)
    model = run.model.to(r.device).eval()
    plan = layer_plan(model, tasks, r.settings, arm.arm_id)
    paths = {t: resolve_layer_name(model, plan.primary[t], t) for t in tasks}
    names = list(r.settings.explainers)
    n = min(settings.images, len(batch.image_ids))
    key = sanity_key(settings, names, batch.image_ids[:n], paths)
    uid = f"sanity:{dense_id}:{key}"
    if r._is_done(uid):
        return
    t = Clock()
    rows = sanity_rows(dense_id, model, batch.images[:n].to(r.device), tasks, names, paths, settings, key,
                       plan.primary)
    r._commit(UnitRows(uid, "sanity", {"sanity": rows}, arm.arm_id, dense_id,
                       {"explainers": names, "image_ids": batch.image_ids[:n], **settings.to_dict()},
                       *t.spent()))
