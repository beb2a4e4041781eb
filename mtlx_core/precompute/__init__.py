"""Precompute the study store: train, prune, explain and measure every arm of a study preset into DuckDB.

``run_precompute(get_study_preset("demo"), "models_store/study.duckdb", "models_store")`` (or
``python -m mtlx_core.precompute --preset demo``) builds, resumes, or verifies there is nothing left to do.
Work is split into journaled units (``units``); readers open the published snapshot
(``mtlx_core.store.snapshot.open_readonly``).
"""

from mtlx_core.precompute.presets import STUDY_PRESETS, ArmSpec, ExplainSettings, StudyPreset, get_study_preset
from mtlx_core.precompute.runner import PrecomputeResult, run_precompute
from mtlx_core.precompute.summary import format_summary, summarize

__all__ = ["STUDY_PRESETS", "ArmSpec", "ExplainSettings", "PrecomputeResult", "StudyPreset", "format_summary",
           "get_study_preset", "run_precompute", "summarize"]
