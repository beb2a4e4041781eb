"""What the verdict (D24-D25) reads from a study store: model roles, per-target margins, selection, performance.

Works on any reader with ``df(sql, params)``: the app's ``Store`` or a DuckDB connection wrapped in
``ConnectionReader`` (the precompute summary reads its work file). No schema of its own: the seed of a model is
``models.seed``, else ``models.config``'s ``seed``; a model's dense reference is the root of its ``parent_id``
chain (HRank's rounds chain); a *control* (the dense model fine-tuned with the pruned models' schedule at 0 %
sparsity) is a model with a parent whose ``pruning_method`` is ``control`` / ``none``, whose config says
``"role": "control"``, or whose target sparsity is 0 (``IS_CONTROL_SQL`` in SQL: the arm lines of Figure 4, the
summary and the model pickers leave controls out). Precompute's controls (``mtlx_core.prune.control``) meet all
three.

Public API::

    model_roles(r)                      # model_id, arm_id, dataset, role (dense/control/pruned), root_id, seed,
                                        # level, cost columns present (params, macs, *latency*), checkpoint hash
    metric_labels(r, variants)          # (metric, variant, label): default variants ("default") or "all"
    target_margins(r, labels, value)    # per model, task, metric label, image, target (status ok): the margin
    pairs_frame(roles, margins, both_targets)   # the paired per-image frame of mtlx_core.stats.verdict
    selection(r, roles)                 # per model and task: share of the dense targets gone, share of zero maps
    performance(r, roles)               # (per model and task: primary metric, trivial, flag; delta vs references)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Protocol

import duckdb
import pandas as pd

from mtlx_core.stats.verdict import PAIR_COLUMNS

CONTROL_METHODS = ("control", "none")
#: the same rule as ``model_roles`` in SQL over ``models m``: true for a control (precompute's controls,
#: ``mtlx_core.prune.control``, satisfy all three conditions: method ``control``, role ``control``, sparsity 0)
IS_CONTROL_SQL = ("(m.parent_id IS NOT NULL AND (coalesce(m.pruning_method, '') IN ('control', 'none') "
                  "OR coalesce(json_extract_string(m.config, '$.role'), '') = 'control' "
                  "OR coalesce(m.target_sparsity, 0) = 0))")
#: ``FROM arms a`` + this: the models of each arm's line (Figure 4, Layers, Compare): its dense model and the
#: models pruned from the dense model of the same seed (replicates of other seeds and controls: the verdict's)
ARM_LINE_JOIN_SQL = ("JOIN models d ON d.model_id = a.dense_model_id JOIN models m ON m.model_id = a.dense_model_id "
                     f"OR (m.arm_id = a.arm_id AND NOT {IS_CONTROL_SQL} AND coalesce(m.seed, 0) = coalesce(d.seed, 0))")
VARIANT_CHOICES = ("default", "all")
VALUES = ("score_norm", "score")


class Reader(Protocol):
    def df(self, sql: str, params: Sequence[Any] = ...) -> pd.DataFrame: ...


class ConnectionReader:
    """``df(sql, params)`` on a DuckDB connection (each query on its own cursor)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def df(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        cur = self.con.cursor()
        try:
            return cur.execute(sql, list(params)).df()
        finally:
            cur.close()


def cost_columns(r: Reader) -> list[str]:
    """The per-model cost columns the store has (D27): params, macs and any ``*latency*`` column."""
    cols = r.df("SELECT column_name FROM information_schema.columns WHERE table_name = 'models'")["column_name"]
    return [c for c in cols if c in ("params", "macs") or "latency" in c]


def model_roles(r: Reader) -> pd.DataFrame:
    costs = cost_columns(r)
    extra = "".join(f", m.{c}" for c in costs if c not in ("params", "macs"))
    df = r.df("SELECT m.model_id, coalesce(m.arm_id, a.arm_id) AS arm_id, m.dataset, m.parent_id, m.pruning_method, "
              "coalesce(m.target_sparsity, 0) AS level, m.achieved_sparsity, m.params, m.macs, m.seed, "
              f"m.checkpoint_sha256, m.config{extra} FROM models m LEFT JOIN arms a ON a.dense_model_id = m.model_id "
              "ORDER BY m.model_id")
    parent = dict(zip(df["model_id"], df["parent_id"], strict=True))
    seeds, roles, roots = [], [], []
    for row in df.itertuples(index=False):
        cfg: dict[str, Any] = {}
        try:
            cfg = json.loads(row.config) if isinstance(row.config, str) and row.config else {}
        except json.JSONDecodeError:
            cfg = {}
        root, seen = row.model_id, set()
        while isinstance(parent.get(root), str) and parent[root] in parent and root not in seen:
            seen.add(root)
            root = parent[root]
        roots.append(root)
        seed = row.seed if row.seed is not None and not pd.isna(row.seed) else cfg.get("seed", 0)
        seeds.append(int(seed) if seed is not None else 0)
        if not isinstance(row.parent_id, str):
            roles.append("dense")
        elif (row.pruning_method in CONTROL_METHODS or cfg.get("role") == "control" or float(row.level) == 0):
            roles.append("control")
        else:
            roles.append("pruned")
    df["root_id"], df["seed"], df["role"] = roots, seeds, roles
    return df.drop(columns=["config", "parent_id"])


def metric_labels(r: Reader, variants: str = "default") -> list[tuple[str, str, str]]:
    """(metric, variant, label) of the faithfulness metrics stored at the primary layer: each metric's default
    variant (the study's first fill, the absolute depth floor) labelled by its name, and with ``all`` every other
    variant too, labelled ``metric[variant]``."""
    if variants not in VARIANT_CHOICES:
        raise ValueError(f"unknown variants choice {variants!r}; valid: {', '.join(VARIANT_CHOICES)}")
    df = r.df("SELECT metric, variant FROM faithfulness WHERE explainer = 'gradcam' AND layer_role = 'primary' "
              "GROUP BY metric, variant ORDER BY metric <> 'irof', metric, variant LIKE '%depth_floor=%', "
              "variant NOT LIKE '%fill=quantus%', variant")
    out, seen = [], set()
    for metric, variant in df.itertuples(index=False):
        default = metric not in seen
        seen.add(metric)
        if default or variants == "all":
            out.append((metric, variant, metric if default else f"{metric}[{variant}]"))
    return out


def target_margins(r: Reader, labels: Sequence[tuple[str, str, str]], value: str = "score_norm",
                   model_ids: Sequence[str] | None = None, task: str | None = None, explainer: str = "gradcam"
                   ) -> pd.DataFrame:
    """Per (model, task, metric label, image, target) with status ok at the primary layer: the explainer's
    value minus the mean of the K random orderings of the same target (D24); AbPC's chance is 0. ``model_ids``
    and ``task`` restrict the rows read; ``explainer``: whose scores (the random orderings are shared)."""
    if value not in VALUES:
        raise ValueError(f"unknown score column {value!r}; valid columns: {', '.join(VALUES)}")
    cols = ["model_id", "task", "metric", "image_id", "target_id", "margin"]
    if not labels:
        return pd.DataFrame(columns=cols)
    keys = [f"{m}\x1f{v}" for m, v, _ in labels]
    marks = ", ".join("?" * len(keys))
    only = "" if model_ids is None else f" AND model_id IN ({', '.join('?' * len(model_ids))})"
    only += "" if task is None else " AND task = ?"
    args = [*keys, *(model_ids or ()), *([] if task is None else [task]), explainer]
    df = r.df(
        f"WITH f AS (SELECT model_id, task, image_id, target_id, metric, variant, ordering, explainer, layer_role, "
        f"  {value} AS v FROM faithfulness WHERE status = 'ok' AND metric || chr(31) || variant IN ({marks}){only}), "
        "e AS (SELECT * FROM f WHERE ordering = 'morf' AND explainer = ? AND layer_role = 'primary'), "
        "r AS (SELECT model_id, task, image_id, target_id, metric, variant, avg(v) AS rv FROM f "
        "  WHERE ordering = 'random' GROUP BY ALL) "
        "SELECT e.model_id, e.task, e.metric, e.variant, e.image_id, e.target_id, "
        "CASE WHEN e.metric LIKE 'abpc%' THEN e.v ELSE e.v - r.rv END AS margin "
        "FROM e LEFT JOIN r USING (model_id, task, image_id, target_id, metric, variant)", args)
    names = {(m, v): lab for m, v, lab in labels}
    df["metric"] = [names[(m, v)] for m, v in zip(df["metric"], df["variant"], strict=True)]
    return df[df["margin"].notna()][cols].reset_index(drop=True)


def _references(roles: pd.DataFrame) -> pd.DataFrame:
    """(model, reference kind, reference id) for every pruned and control model."""
    control = roles[roles["role"] == "control"].drop_duplicates(["arm_id", "root_id"])
    ctrl = dict(zip(zip(control["arm_id"], control["root_id"], strict=True), control["model_id"], strict=True))
    rows = []
    for m in roles[roles["role"] != "dense"].itertuples(index=False):
        rows.append((m.model_id, "dense", m.root_id))
        c = ctrl.get((m.arm_id, m.root_id))
        if m.role == "pruned" and c is not None:
            rows.append((m.model_id, "control", c))
    return pd.DataFrame(rows, columns=["model_id", "reference", "reference_id"])


def pairs_frame(roles: pd.DataFrame, margins: pd.DataFrame, both_targets: bool = False) -> pd.DataFrame:
    """The paired per-image frame (``PAIR_COLUMNS``): each model's per-image margin (mean over its ok targets)
    beside its reference's on the same image; ``both_targets``: only the (image, target) pairs both models have
    (the sensitivity analysis)."""
    refs = _references(roles).merge(roles[["model_id", "arm_id", "role", "level", "seed", "root_id"]], on="model_id")
    keys = ["task", "metric", "image_id"]
    per_image = margins.groupby(["model_id", *keys], sort=False)["margin"].mean().reset_index()
    if both_targets:
        t = margins.merge(refs[["model_id", "reference_id"]], on="model_id")
        t = t.merge(margins.rename(columns={"model_id": "reference_id", "margin": "margin_reference"}),
                    on=["reference_id", *keys, "target_id"])
        out = t.groupby(["model_id", "reference_id", *keys], sort=False)[["margin", "margin_reference"]].mean()
        out = out.reset_index().merge(refs, on=["model_id", "reference_id"])
    else:
        out = refs.merge(per_image, on="model_id").merge(
            per_image.rename(columns={"model_id": "reference_id", "margin": "margin_reference"}),
            on=["reference_id", *keys])
    dense = per_image.rename(columns={"model_id": "root_id", "margin": "margin_dense"})
    out = out.merge(dense, on=["root_id", *keys], how="left")
    out = out.rename(columns={"margin": "margin_model", "role": "model_role"})
    if out.empty:
        return pd.DataFrame(columns=list(PAIR_COLUMNS))
    return out[list(PAIR_COLUMNS)].sort_values(["arm_id", "reference", "task", "metric", "level", "seed",
                                                "image_id"], kind="stable").reset_index(drop=True)


def selection(r: Reader, roles: pd.DataFrame, explainer: str = "gradcam") -> pd.DataFrame:
    """Per (model, task) at the primary layer: ``targets_dropped``, the share of the dense (root) model's
    explained (image, target) pairs the model no longer explains, and ``zero_maps``, the share of the model's
    own maps that are all zero."""
    ex = r.df("SELECT model_id, task, image_id, target_id, is_zero FROM explanations WHERE layer_role = 'primary' "
              "AND explainer = ?", [explainer])
    root = dict(zip(roles["model_id"], roles["root_id"], strict=True))
    rows = []
    have = {k: set(zip(g["image_id"], g["target_id"], strict=True)) for k, g in ex.groupby(["model_id", "task"])}
    for (model, task), g in ex.groupby(["model_id", "task"]):
        dense = have.get((root.get(model, model), task), set())
        kept = len(dense & have[(model, task)])
        rows.append({"model_id": model, "task": task, "n_targets": len(g),
                     "targets_dropped": 1 - kept / len(dense) if dense else math.nan,
                     "zero_maps": float(g["is_zero"].astype(float).mean())})
    return pd.DataFrame(rows, columns=["model_id", "task", "n_targets", "targets_dropped", "zero_maps"])


def performance(r: Reader, roles: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (model, task): the task's primary metric, the trivial predictor's and ``no_better_than_trivial`` (the
    model does not beat it strictly); and per (model, reference, task) ``d_perf`` = model minus reference,
    signed so that positive means better."""
    df = r.df("SELECT t.model_id, t.task, t.metric AS task_metric, t.value, t.higher_is_better, "
              "tr.value AS trivial FROM task_metrics t JOIN models m USING (model_id) "
              "LEFT JOIN task_metrics tr ON tr.model_id = 'trivial:' || m.dataset AND tr.task = t.task "
              "AND tr.metric = t.metric WHERE t.is_primary")
    sign = df["higher_is_better"].map(lambda h: 1.0 if h else -1.0)
    better = (df["value"] - df["trivial"]) * sign > 0
    df["no_better_than_trivial"] = df["trivial"].notna() & ~better
    refs = _references(roles)
    val = df.set_index(["model_id", "task"])["value"]
    d = refs.merge(df[["model_id", "task", "value", "higher_is_better"]], on="model_id")
    ref_val = [val.get((rid, t), math.nan) for rid, t in zip(d["reference_id"], d["task"], strict=True)]
    d["d_perf"] = (d["value"] - ref_val) * d["higher_is_better"].map(lambda h: 1.0 if h else -1.0)
    return df, d[["model_id", "reference", "reference_id", "task", "d_perf"]]
