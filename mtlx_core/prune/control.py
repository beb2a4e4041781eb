"""``control_run``: the training-budget control of a pruning arm (issue 18): the dense model fine-tuned with exactly
the pruned models' fine-tuning schedule at 0 % sparsity.

The control goes through the pruning pipeline's own steps (``mtlx_core.prune.pipeline``): the parent's
configuration, the pruning preset of (parent, method, variant), the method's fine-tuning overrides (e.g. no BN L1
for Network Slimming ``decoupled``, L1 kept on for ``authors``), the preset's recipe and ``--finetune-iters``,
then ``train``. What it leaves out is the selection: no channel is removed and no weight is masked. The start is
the one the method's pruned models start from: the parent's weights, or for static DiSparse (whose masks go on
the dense initialisation, trained with the dense recipe) the dense initialisation re-created from its seed.
An iterative method (HRank) fine-tunes every round with the preset's schedule; the control gets one round's
schedule, the budget of the first level.

The run's ``config.json`` says ``"kind": "control"``, ``"role": "control"``, ``"parent_id"`` and holds a
``PruningRecord`` with ``method = "control"``, target and achieved sparsity 0 and the controlled method in
``details`` (``control_of``, ``control_variant``); precompute stores it as ``models.pruning_method = 'control'``,
``target_sparsity = 0`` with a parent, which is how the verdict recognises a control
(``mtlx_core.store.verdict_data``). Its id derives from (parent, method, variant, fine-tuning configuration), so
the same request resumes an interrupted run or returns the finished one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from mtlx_core.models.base import MultiTaskModel
from mtlx_core.models.surgery import count_macs, count_params
from mtlx_core.prune.groups import channel_plan
from mtlx_core.prune.pipeline import finetune_plan, finetune_record
from mtlx_core.prune.record import PruningRecord, channels_by_kind, weights_by_kind
from mtlx_core.prune.registry import get_method
from mtlx_core.runs import DEFAULT_MODELS_DIR, RunError, is_complete, load_run, run_dir
from mtlx_core.train.loop import TrainResult, prepare_data, train

logger = logging.getLogger(__name__)

#: ``PruningRecord.method`` and ``models.pruning_method`` of a control; ``role`` in its ``config.json``
CONTROL_METHOD = "control"
CONTROL_ROLE = "control"


def control_run(parent_id: str, method: str, *, variant: str | None = None, finetune_iterations: int | None = None,
                preset: str | None = None, models_dir: str | Path = DEFAULT_MODELS_DIR, device: str | None = None,
                data_root: str | None = None, progress: bool = False) -> TrainResult:
    """Fine-tune dense run ``parent_id`` with ``method``'s fine-tuning schedule at 0 % sparsity (the module
    docstring); returns the control run."""
    m = get_method(method)
    if variant is not None and variant not in m.variants:
        names = ", ".join(v for v in m.variants if v) or "none (leave --variant out)"
        raise ValueError(f"method {method!r} has no variant {variant!r}; valid variants: {names}")
    parent_cfg, variant, p, ft = finetune_plan(m, parent_id, variant, preset, finetune_iterations, models_dir,
                                               data_root, device)
    key = {"parent": parent_id, "role": CONTROL_ROLE, "method": method, "variant": variant,
           "finetune": ft.fingerprint()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    tag = f"{method}-{variant}" if variant else method
    run_id = f"{parent_cfg.preset}-control-{tag}-{digest}"
    if is_complete(run_dir(run_id, models_dir)):
        logger.info("control run %s already exists", run_id)
        return train(ft, models_dir, run_id=run_id)
    model = None
    if m.needs_parent_weights(variant):
        parent = load_run(parent_id, models_dir, device="cpu")
        if not isinstance(parent.model, MultiTaskModel):
            raise RunError(f"run {parent_id!r} does not hold a multi-task model of the registry")
        model = parent.model
    train_ds, _ = prepare_data(ft)
    input_shape = tuple(train_ds[0]["image"].shape)
    sized = model if model is not None else load_run(parent_id, models_dir, device="cpu").model  # dense sizes
    params, macs = count_params(sized), count_macs(sized, input_shape)
    # per module kind: nothing removed (structured: channels of the dense plan; unstructured: non-zero weights)
    by_kind = (channels_by_kind(sized, sized, channel_plan(sized)) if m.structured else weights_by_kind(sized))
    record = PruningRecord(
        method=CONTROL_METHOD, variant=None, structured=m.structured, target_sparsity=0.0, achieved_sparsity=0.0,
        preset=p.name, root_parent_id=parent_id, params_before=params, params_after=params, macs_before=macs,
        macs_after=macs, input_shape=input_shape, finetune=finetune_record(ft, variant),
        removed_by_kind=by_kind, channels_removed=0.0 if m.structured else None,
        details={"control_of": method, "control_variant": variant})
    logger.info("%s: control of %s%s, %d fine-tuning iterations at lr %g (bn_l1 %g)", parent_id, method,
                f" ({variant})" if variant else "", ft.iterations, ft.lr, ft.bn_l1)
    return train(ft, models_dir, model=model, run_id=run_id, progress=progress,
                 extra_config={"kind": "control", "role": CONTROL_ROLE, "parent_id": parent_id,
                               "pruning": record.to_dict()})
