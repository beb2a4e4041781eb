"""Overview: what the store holds, and the study's Figure 4 on it (faithfulness and task performance vs sparsity)."""

from __future__ import annotations

import streamlit as st

from mtlx_core.store import query
from pages import figures
from pages.common import METHOD_LABELS, TASK_LABELS, q, store_or_stop

st.title("Faithfulness of explanations under pruning")
store = store_or_stop()

info = q(store, "overview")
meta, counts = info["meta"], info["counts"]
st.caption(f"Store `{store.path}` · preset **{meta.get('preset', '?')}** · updated "
           f"{meta.get('updated_at', meta.get('created_at', '?'))} · code {meta.get('code_version', '?')}")
status = query.build_status(store)  # not cached: it follows a running precompute
if status["status"] != "complete":
    done, planned = status["arms_complete"], status["arms_planned"]
    progress = f"{len(done)} of {len(planned)} arms complete" if planned else "no arm complete yet"
    if status["status"] == "running":
        st.info(f"**Precompute is still running** ({progress}). What is ready is shown; it publishes a snapshot "
                "after every arm and every few minutes, reload the page to see more.")
    else:
        st.warning(f"**The precompute that built this store stopped early** ({progress}). Run the same "
                   "`python -m mtlx_core.precompute` command again to finish it.")
cols = st.columns(6)
for col, (label, table) in zip(cols, [("Arms", "arms"), ("Models", "models"), ("Images", "images"),
                                      ("Explanations", "explanations"), ("IROF curves", "irof"),
                                      ("Similarities", "similarity")], strict=True):
    col.metric(label, f"{counts.get(table, 0):,}")
if counts.get("irof", 0) == 0:
    st.info("No IROF curve has been published yet; precompute publishes each arm when it is finished.")
    st.stop()

arms = q(store, "arms")
arm_labels = dict(zip(arms["arm_id"], arms["label"], strict=True))
c1, c2, c3, c4 = st.columns(4)
modes = q(store, "fill_modes")
fill_mode = c1.selectbox("IROF fill mode", modes, key="ov_fill", help="D18: quantus = running image mean; "
                         "fixed = per-channel mean of the original image")
value = c2.radio("AOC", ["aoc_norm", "aoc"], horizontal=True, key="ov_value",
                 format_func=lambda v: {"aoc_norm": "AOC / segments", "aoc": "AOC"}[v])
x = c3.radio("Sparsity axis", ["target_sparsity", "sparsity"], horizontal=True, key="ov_x",
             format_func=lambda v: {"target_sparsity": "target", "sparsity": "achieved"}[v])
baselines = c4.multiselect("Baselines", ["random", "reversed"], default=["random"], key="ov_baselines",
                           format_func=METHOD_LABELS.get)

fig4 = q(store, "figure4", fill_mode, value)
perf = q(store, "performance")
tasks = [t for t in TASK_LABELS if t in set(fig4["task"]) | set(perf["task"])]
st.subheader("Mean AOC and task performance vs sparsity")
st.caption("Left: mean AOC of Grad-CAM (solid, 95 % bootstrap interval over images) and of the baselines (dashed "
           "random, dotted reversed); higher = more faithful. Right: the task's primary validation metric "
           "(pooled over all pixels of the split, so it has no per-image interval) and the trivial predictor. "
           "Click a point to open that model's images in Compare.")

selected = None
for task in tasks:
    st.markdown(f"**{TASK_LABELS[task]}**")
    left, right = st.columns(2)
    ft = fig4[fig4["task"] == task]
    fig = figures.aoc_vs_sparsity(ft, arm_labels, x, "mean AOC / segments" if value == "aoc_norm" else "mean AOC",
                                  baselines)
    event = left.plotly_chart(fig, key=f"ov_aoc_{task}", on_select="rerun", selection_mode="points")
    pt = perf[perf["task"] == task]
    if not pt.empty:
        fig_p = figures.performance_vs_sparsity(pt, arm_labels, x, str(pt["metric"].iloc[0]))
        event_p = right.plotly_chart(fig_p, key=f"ov_perf_{task}", on_select="rerun", selection_mode="points")
    else:
        event_p = None
        right.info("No validation metric stored for this task.")
    for ev in (event, event_p):
        points = (ev or {}).get("selection", {}).get("points", []) if ev else []
        if points and points[0].get("customdata"):
            selected = (points[0]["customdata"][0], task)

models = q(store, "models")
st.subheader("Open a model in Compare")
pick_cols = st.columns([3, 1])
arm_of = dict(zip(models["model_id"], models["arm_id"], strict=True))
chosen = pick_cols[0].selectbox("Model", list(arm_of), key="ov_model",
                                format_func=lambda m: f"{m} · {arm_labels.get(arm_of[m], '')}")
if pick_cols[1].button("Open in Compare", key="ov_open"):
    selected = (chosen, None)
if selected is not None:
    model_id, task = selected
    row = models.set_index("model_id").loc[model_id]
    st.session_state["drill_model"] = model_id
    st.session_state["drill_arm"] = row["arm_id"]
    st.session_state["drill_task"] = task
    for k in ("cmp_arm", "cmp_models", "cmp_task"):
        st.session_state.pop(k, None)
    st.switch_page("pages/compare.py")

st.subheader("Aggregates")
st.dataframe(fig4.assign(method=fig4["saliency_method"].map(lambda m: METHOD_LABELS.get(m, m))),
             hide_index=True, height=240)
d1, d2, d3 = st.columns(3)
d1.download_button("Download AOC aggregates (CSV)", fig4.to_csv(index=False).encode(),
                   file_name=f"aoc_{fill_mode}_{value}.csv", mime="text/csv", key="ov_csv_aoc")
d2.download_button("Download per-image AOC (CSV)", q(store, "aoc_per_image", fill_mode, value).to_csv(index=False)
                   .encode(), file_name=f"aoc_per_image_{fill_mode}_{value}.csv", mime="text/csv", key="ov_csv_img")
d3.download_button("Download task performance (CSV)", perf.to_csv(index=False).encode(),
                   file_name="task_performance.csv", mime="text/csv", key="ov_csv_perf")
