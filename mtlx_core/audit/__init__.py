"""Audit checkpoints mtlx never trained: did pruning change the explanations of YOUR multi-task model?

``python -m mtlx_core.audit --plugin PKG --model NAME --data DIR --dataset synth --tasks segmentation,depth
--dense dense.pt --pruned a.pt --pruned b.pt --store audit.duckdb`` (or ``run_audit(AuditRequest(...))``):

1. checks every input before writing anything (``audit.checks``: plugins, model, data, every checkpoint, the
   outputs against the tasks, the explanation layer; :class:`AuditInputError`, exit code 2);
2. imports each checkpoint as a run folder in ``--models-dir`` (``audit.imports``: task metrics on the data's
   validation split, measured sparsity; re-running reuses them);
3. runs precompute's executor on one arm of these runs (``audit.runner``: parameters, MACs, latency, Grad-CAM,
   the faithfulness metrics with their random and reversed orderings, similarity to the dense maps; journaled
   and resumable) into a store that the app opens like a study store, and logs the summary and the verdict of
   every pruned model against the dense one (``docs/verdict.md``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from mtlx_core.audit.checks import AuditInputs, check_inputs
from mtlx_core.audit.imports import import_runs
from mtlx_core.audit.request import AUDIT_EXPLAIN, AuditInputError, AuditRequest, parse_model_args
from mtlx_core.audit.runner import ImportedArm, ImportedRunner
from mtlx_core.precompute.plan import PrecomputeResult
from mtlx_core.precompute.presets import ArmSpec
from mtlx_core.train.loop import resolve_device

logger = logging.getLogger(__name__)

__all__ = ["AUDIT_EXPLAIN", "AuditInputError", "AuditRequest", "AuditResult", "parse_model_args", "run_audit"]


@dataclass
class AuditResult:
    precompute: PrecomputeResult
    arm_id: str
    dense_id: str
    pruned_ids: list[str]


def audit_arm(req: AuditRequest, inputs: AuditInputs) -> ArmSpec:
    """The audit's one arm: its id, label and the pruned checkpoints' measured sparsities."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", req.model).strip("_") or "model"
    levels = tuple(sorted(p.level for p in inputs.pruned))
    label = (f"{req.model} · {' + '.join(inputs.tasks)} · audit of {len(inputs.pruned)} pruned checkpoint"
             f"{'s' if len(inputs.pruned) > 1 else ''}")
    # the dense model is imported, not trained: no training preset; method "external" (pruned outside mtlx)
    return ArmSpec(f"audit_{name}", label, "", "external", None, (0.0, *levels))


def run_audit(req: AuditRequest) -> AuditResult:
    """Check, import, explain and measure (see the module docstring)."""
    try:
        device = str(resolve_device(req.device))
    except ValueError as exc:
        raise AuditInputError(str(exc)) from exc
    inputs = check_inputs(req)
    for p in inputs.pruned:
        logger.info("%s: %s, measured sparsity %.3f (%s; weights %.3f, channels %.3f)", p.path, p.info.format,
                    p.level, p.measure, p.info.weight_sparsity, p.info.channel_sparsity)
    dense_id, pruned_ids = import_runs(req, inputs, device)
    arm = audit_arm(req, inputs)
    given = ImportedArm(arm, inputs.spec, req.data, tuple(inputs.tasks), dense_id, tuple(pruned_ids))
    runner = ImportedRunner(given, req.settings(), req.store, req.runs_dir, device=device, progress=req.progress,
                            latency=req.latency)
    return AuditResult(runner.run(), arm.arm_id, dense_id, pruned_ids)
