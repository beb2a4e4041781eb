"""Verdict: does pruning change the faithfulness of the explanations? One verdict per arm, level, task and metric
(D24-D25, docs/verdict.md), and a cell's evidence: per-image deltas, the curves at both ends, the tests."""

from __future__ import annotations

import streamlit as st

from mtlx_core.store import query
from pages import figures
from pages import verdict_figures as vf
from pages.common import (
    VALUE_LABELS,
    explainer_label,
    keep_in_url,
    metric_label,
    pick_explainer,
    q,
    store_or_stop,
    task_labels,
)

KEYS = ("vd_reference", "vd_value", "vd_delta", "vd_arms", "vd_metrics", "vd_cell", "vd_axis", "vd_cost_task",
        "vd_cost_metric", "vd_explainer")
DELTAS = (0.05, 0.1, 0.2)

st.title("Verdict: does pruning change faithfulness?")
st.caption("Per image, the margin over chance (Grad-CAM's normalised score minus the mean of the K random orderings "
           "on the same image, over the image's targets; AbPC as it is) of each pruned model is paired with its "
           "reference's on the same image: Δ = model − reference. **equivalent**: the paired TOST rejects a change "
           "beyond ±δ (δ = a share of the reference's mean margin); else **lower** / **higher**: the Wilcoxon "
           "signed-rank test, Holm-adjusted over the levels of the arm, task, metric and reference, has p < 0.05 "
           "and the 95 % BCa interval of the mean Δ excludes 0; else **inconclusive**. × marks a model whose task "
           "metric is no better than the trivial predictor's. The rule in full: docs/verdict.md.")
keep_in_url(KEYS)
store = store_or_stop()
task_label = task_labels(store)

c1, c2, c3, c4 = st.columns([1, 2, 1, 1])
reference = c1.radio("Reference", list(query.REFERENCES), horizontal=True, key="vd_reference",
                     help="dense: the unpruned model; control: the dense model fine-tuned with the pruned models' "
                          "schedule at 0 % sparsity (when the store has one)")
value = c2.radio("Score", list(query.VALUES), horizontal=True, key="vd_value", format_func=VALUE_LABELS.get)
if st.session_state.get("vd_delta") not in DELTAS:
    st.session_state.pop("vd_delta", None)
delta_share = c3.selectbox("TOST margin δ (share of the reference margin)", DELTAS, index=None,
                           placeholder="10 % (default)", key="vd_delta", format_func=lambda d: f"{d:.0%}")
delta_share = float(delta_share or 0.1)
explainer = pick_explainer(store, None, "vd_explainer", c4)
if explainer != "gradcam":
    st.caption(f"The verdict on **{explainer_label(explainer)}**'s scores: only the models that have them have cells "
               "(a preset may run the extra explainers on a sub-grid: the demo runs them on the dense models and the "
               "first pruned level of each arm).")

with st.spinner("Testing every cell (once per store snapshot)..."):
    grid = q(store, "verdict_grid", reference, value, delta_share, explainer)
if grid.empty:
    st.info(f"No pruned model has faithfulness scores paired with a {reference} model yet"
            + (": the store has no control model." if reference == "control" else ".")
            + " Precompute publishes each arm when it is finished.")
    st.stop()
arms = q(store, "arms")
labels = dict(zip(arms["arm_id"], arms["label"], strict=True))
f1, f2 = st.columns(2)
arm_ids = list(dict.fromkeys(grid["arm_id"]))
metrics = list(dict.fromkeys(grid["metric"]))
for key, valid in (("vd_arms", arm_ids), ("vd_metrics", metrics)):
    if key in st.session_state and not set(st.session_state[key]) <= set(valid):
        st.session_state[key] = [v for v in st.session_state[key] if v in valid]
chosen_arms = f1.multiselect("Arms", arm_ids, key="vd_arms", format_func=lambda a: labels.get(a) or a,
                             placeholder="all arms")
chosen_metrics = f2.multiselect("Metrics", metrics, key="vd_metrics", format_func=metric_label,
                                placeholder="all metrics")
shown = grid[grid["arm_id"].isin(chosen_arms or arm_ids) & grid["metric"].isin(chosen_metrics or metrics)]
shown = shown.sort_values(["arm_id", "level", "task", "metric"]).reset_index(drop=True)
counts = shown["verdict"].value_counts()
st.markdown(" · ".join(f"**{counts.get(v, 0)}** {v}" for v in vf.VERDICT_ORDER)
            + f" of {len(shown)} cells (reference: {reference})")

cells = {vf.cell_key(r): r for r in shown.to_dict("records")}
row_label = {(a, lv): f"{labels.get(a) or a} · {lv * 100:.4g} %" for a, lv in zip(shown["arm_id"], shown["level"],
                                                                                strict=True)}
event = st.plotly_chart(vf.grid(shown, row_label, st.session_state.get("vd_cell")), key="vd_grid",
                        on_select="rerun", selection_mode="points")
points = (event or {}).get("selection", {}).get("points", []) if event else []
clicked = points[0].get("customdata") if points else None
if clicked in cells and clicked != st.session_state.get("vd_last_click"):
    st.session_state["vd_last_click"] = clicked
    st.session_state["vd_cell"] = clicked
if st.session_state.get("vd_cell") not in cells:
    st.session_state.pop("vd_cell", None)


def cell_name(k: str) -> str:
    r = cells[k]
    arm = labels.get(r["arm_id"]) or r["arm_id"]
    return (f"{arm} · {r['level'] * 100:.4g} % · {task_label.get(r['task'], r['task'])} · {metric_label(r['metric'])}"
            f" — {r['verdict']}")


cell = st.selectbox("Cell (or click one in the grid)", list(cells), key="vd_cell", format_func=cell_name)
row = cells[cell]
ev = q(store, "verdict_cell", row["model_id"], reference, row["task"], row["metric"], value, delta_share,
       explainer)
r = ev["row"]
st.subheader(cell_name(cell))
m = st.columns(6)
m[0].metric("mean Δ", f"{r['mean_delta']:+.4f}", help="model − reference, mean over images (pooled over seeds)")
m[1].metric("95 % interval", f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]",
            help="BCa paired bootstrap (one seed) or hierarchical bootstrap over seeds, then images")
m[2].metric("Holm p (Wilcoxon)", f"{r['p_holm']:.3g}", help=f"raw {r['p_wilcoxon']:.3g}, BH q {r['q_bh']:.3g}")
m[3].metric("TOST p", f"{r['p_tost']:.3g}", help=f"equivalence margin ±{r['margin']:.4g}")
m[4].metric("share of dense margin lost", f"{r['share_of_margin_lost']:.0%}",
            help=f"rank-biserial {r['rank_biserial']:+.2f}")
m[5].metric("images · seeds", f"{r['n_images']} · {r['n_seeds']}")
st.caption(f"Selection: {r['targets_dropped']:.0%} of the dense model's targets are gone, {r['zero_maps']:.0%} of "
           f"the model's maps are all zero. Task metric ({r['task_metric']}): {r['task_value']:.4g}, trivial "
           f"predictor {r['trivial']:.4g}."
           + (" **The model is no better than the trivial predictor at this task: its faithfulness means little.**"
              if r["no_better_than_trivial"] else ""))
sens = ev["sensitivity"]
st.caption(f"Sensitivity (only the (image, target) pairs both models explain): mean Δ {sens['mean_delta']:+.4f} "
           f"[{sens['ci_low']:+.4f}, {sens['ci_high']:+.4f}] over {sens['n_images']} images, Wilcoxon p "
           f"{sens['p_wilcoxon']:.3g} (unadjusted).")
if r["n_seeds"] > 1:
    st.dataframe(ev["seeds"][["seed", "model_id", "n_images", "mean_delta", "ci_low", "ci_high", "p_holm", "p_tost",
                              "verdict"]], hide_index=True, key="vd_seeds")

pairs = ev["pairs"]
left, right = st.columns(2)
left.markdown("**Per image: reference → model** (red: lower, green: higher)")
left.plotly_chart(vf.paired_points(pairs, "model", reference), key="vd_paired")
right.markdown("**Distribution of Δ** with the mean, its interval and ±δ")
right.plotly_chart(vf.delta_distribution(pairs, r), key="vd_hist")

st.markdown("**The images at both ends**: the curves of the image whose Δ is lowest and of the one whose Δ is "
            "highest, on the target where the two models differ most")
metric, variant = ev["metric_variant"]
ends = st.columns(2)
for col, ex in zip(ends, ev["extremes"].to_dict("records"), strict=False):
    col.markdown(f"{ex['end']} Δ: {ex['delta']:+.4f} (image {ex['image_id']}, target {ex['target_id']})")
    if ex["target_id"] is None:
        col.info("No target of this image is scored for both models.")
        continue
    curves = q(store, "faithfulness_curves", [ex["model_id"], ex["reference_id"]], ex["image_id"], row["task"],
               int(ex["target_id"]), metric, variant, None, explainer)
    if curves["curve"].map(lambda c: c is not None and len(c) > 0).any():
        col.plotly_chart(figures.perturbation_curves(curves, {ex["model_id"]: "model", ex["reference_id"]:
                                                              reference}, {ex["model_id"]: "#d62728",
                                                                           ex["reference_id"]: "#636efa"}, value,
                                                     height=320), key=f"vd_curves_{ex['end']}")
    else:
        col.dataframe(curves[["model_id", "ordering", "replicate", "score", "score_norm", "status"]],
                      hide_index=True, key=f"vd_scores_{ex['end']}")

st.markdown("**The tests of this family** (arm, task, metric, reference over its levels)")
st.plotly_chart(vf.family(ev["family"], r["model_id"]), key="vd_family")
tr = ev["trend"]
if not tr.empty:
    t = tr[tr["seed"] == (tr["seed"].min() if r["n_seeds"] == 1 else -1)].iloc[0]
    st.caption(f"Page's trend test over the levels {t['levels']} ({int(t['n_images'])} images with every level): "
               f"p = {t['p_decreasing']:.3g} for faithfulness falling with sparsity, {t['p_increasing']:.3g} for "
               "rising.")
st.download_button("Download this cell's per-image margins (CSV)", pairs.to_csv(index=False).encode(),
                   file_name=f"per_image_{row['model_id']}_{row['task']}_{row['metric']}_{reference}.csv",
                   mime="text/csv", key="vd_csv")
st.caption("The whole study's tables, figures and manifest: `python -m mtlx_core.report --store S --out DIR`.")

st.subheader("At what cost? (D27)")
axes = q(store, "cost_axes")
c1, c2, c3 = st.columns(3)
if st.session_state.get("vd_axis") not in axes:
    st.session_state.pop("vd_axis", None)
axis = c1.selectbox("Cost axis", axes, key="vd_axis", format_func=lambda a: query.COST_AXES.get(a, a))
cost_metric = c2.selectbox("Faithfulness metric", metrics, key="vd_cost_metric", format_func=metric_label)
points = q(store, "verdict_pareto", cost_metric, value, delta_share, explainer)
tasks = list(dict.fromkeys(points["task"]))
if st.session_state.get("vd_cost_task") not in tasks:
    st.session_state.pop("vd_cost_task", None)
task = c3.selectbox("Task", tasks, key="vd_cost_task", format_func=lambda t: task_label.get(t, t))
shown_pts = points[(points["task"] == task) & points["arm_id"].isin(chosen_arms or arm_ids)]
st.plotly_chart(vf.cost_view(shown_pts, axis, query.COST_AXES.get(axis, axis), metric_label(cost_metric),
                             axis != "level"), key="vd_cost")
st.caption("Each model's mean margin over chance (left) and primary task metric (right) against its cost: parameters "
           "and MACs at the study's input size, measured latency of the deployed form (batch 1, one CPU thread, median "
           "of 20 runs after warm-up; GPU when the study ran on one) or the nominal sparsity. Square: dense, diamond: "
           "control, circle: pruned; ringed: the Pareto front of (task metric, margin, MACs) among the task's models.")
