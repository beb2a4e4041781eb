"""The sanity checks of the dense models' explanations (issue 21; rows of ``sanity``, written by precompute's
``sanity`` unit, ``mtlx_core.precompute.sanity_unit``).

A store built before the table existed (or with ``sanity`` off) has no rows: every query returns an empty frame
with its columns.

Public API::

    sanity_summary(store)                          # per model, explainer and check: passed (all), n_passed, n
    sanity_randomisation(store, model_id, explainer)  # the cascade: task, step, label, spearman, ssim, emprt, ...
    sanity_heads(store, model_id, explainer)       # head randomisation: head_task, task, spearman, identical, ...
    sanity_reference(store, model_id, explainer)   # random target and noise floor: task, check_name, means
"""

from __future__ import annotations

import pandas as pd

from mtlx_core.store.reader import Store

#: the checks with a verdict, in the order the app lists them (the noise floor is a reference)
VERDICT_CHECKS: tuple[str, ...] = ("model_randomisation", "head_randomisation", "random_target")

_SUMMARY_COLS = ["model_id", "arm", "arch", "seed", "explainer", "check_name", "passed", "n_passed", "n"]


def _has_table(store: Store) -> bool:
    return bool(store.rows("SELECT count(*) FROM information_schema.tables WHERE table_name = 'sanity'")[0][0])


def sanity_summary(store: Store) -> pd.DataFrame:
    """One row per (dense model, explainer, check with a verdict): ``passed`` when every verdict of the check
    passed (model randomisation and random target: one per task; head randomisation: one per head and task),
    ``n_passed`` of ``n``; verdicts that could not be reached (every map all zero) count as not passed."""
    if not _has_table(store):
        return pd.DataFrame(columns=_SUMMARY_COLS)
    return store.df(
        "WITH v AS (SELECT DISTINCT model_id, explainer, task, check_name, variant, coalesce(passed, false) AS ok "
        "FROM sanity WHERE check_name IN ('model_randomisation', 'head_randomisation', 'random_target')) "
        "SELECT v.model_id, a.label AS arm, m.arch, m.seed, v.explainer, v.check_name, bool_and(v.ok) AS passed, "
        "count(*) FILTER (WHERE v.ok) AS n_passed, count(*) AS n, any_value(a.position) AS position "
        "FROM v LEFT JOIN models m USING (model_id) LEFT JOIN arms a ON a.arm_id = m.arm_id "
        "GROUP BY v.model_id, a.label, m.arch, m.seed, v.explainer, v.check_name "
        "ORDER BY position NULLS LAST, v.model_id, v.explainer, "
        "list_position(['model_randomisation', 'head_randomisation', 'random_target'], v.check_name)"
    ).drop(columns="position")


def sanity_randomisation(store: Store, model_id: str, explainer: str) -> pd.DataFrame:
    """The cascading randomisation of one model and explainer: one row per task and step (``step`` i has the
    cascade's first i groups re-initialised, ``modules`` the group it added); ``emprt`` on the last step."""
    cols = ["task", "step", "label", "modules", "spearman", "ssim", "emprt", "n_maps", "n_zero", "passed", "reason",
            "layer", "settings"]
    if not _has_table(store):
        return pd.DataFrame(columns=cols)
    return store.df(f"SELECT {', '.join(cols)} FROM sanity WHERE model_id = ? AND explainer = ? "
                    "AND check_name = 'model_randomisation' ORDER BY task, step", [model_id, explainer])


def sanity_heads(store: Store, model_id: str, explainer: str) -> pd.DataFrame:
    """Head randomisation: one row per re-initialised head (``head_task``) and explained task."""
    cols = ["head_task", "task", "spearman", "ssim", "identical", "passed", "reason", "n_maps"]
    if not _has_table(store):
        return pd.DataFrame(columns=cols)
    return store.df("SELECT variant AS head_task, task, spearman, ssim, identical, passed, reason, n_maps "
                    "FROM sanity WHERE model_id = ? AND explainer = ? AND check_name = 'head_randomisation' "
                    "ORDER BY head_task, task", [model_id, explainer])


def sanity_reference(store: Store, model_id: str, explainer: str) -> pd.DataFrame:
    """Random-target check and noise floor per task: mean Spearman and SSIM (the noise floor averaged over its
    draws), the verdict (NULL for the noise floor) and how many draws."""
    cols = ["task", "check_name", "spearman", "ssim", "passed", "reason", "draws"]
    if not _has_table(store):
        return pd.DataFrame(columns=cols)
    return store.df("SELECT task, check_name, avg(spearman) AS spearman, avg(ssim) AS ssim, any_value(passed) AS "
                    "passed, any_value(reason) AS reason, count(*) AS draws FROM sanity WHERE model_id = ? AND "
                    "explainer = ? AND check_name IN ('random_target', 'noise_floor') GROUP BY task, check_name "
                    "ORDER BY task, check_name DESC", [model_id, explainer])
