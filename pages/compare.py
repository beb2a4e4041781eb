"""Compare: one image, task and target across sparsity levels of one arm (maps of the chosen explainer, predictions,
faithfulness curves of any metric, drift), and every stored explainer's map of the target side by side."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from mtlx_core.store import query
from pages import explainer_grid, figures
from pages.common import (
    ORDERING_LABELS,
    VALUE_SHORT,
    arm_tasks,
    class_names,
    explainer_label,
    keep_in_url,
    metric_label,
    metric_note,
    pick_arm,
    pick_explainer,
    pick_image,
    pick_layer,
    pick_metric,
    pick_target,
    pick_value,
    prediction_figure,
    q,
    sparsity_label,
    store_or_stop,
    task_labels,
)

st.title("Compare explanations across sparsity")
# the selection lives in the URL (a view can be shared)
URL_KEYS = (
    "cmp_arm", "cmp_models", "cmp_task", "cmp_layer", "cmp_image", "cmp_target", "cmp_slic", "cmp_metric",
    "cmp_variant", "cmp_value", "cmp_explainer", "cmp_grid",
)
keep_in_url(URL_KEYS)
store = store_or_stop()
task_label = task_labels(store)

arm = pick_arm(store, "cmp_arm")
levels = q(store, "arm_models", arm.name)
levels = levels.assign(label=[sparsity_label(r) for _, r in levels.iterrows()])
label_of = dict(zip(levels["model_id"], levels["label"], strict=True))
drill = st.session_state.get("drill_model")
if "cmp_models" not in st.session_state:
    default = levels["model_id"].tolist()[:3]
    if drill in label_of and drill not in default:
        default = [levels["model_id"].iloc[0], drill]
    st.session_state["cmp_models"] = default
chosen = st.multiselect("Sparsity levels (two or more)", levels["model_id"].tolist(), key="cmp_models",
                        format_func=label_of.get)
if len(chosen) < 2:
    st.info("Pick at least two sparsity levels of this arm (the dense model is the reference).")
    st.stop()
chosen = [m for m in levels["model_id"] if m in chosen]  # dense first, then by sparsity
dense_id = str(arm["dense_model_id"])

task_options = arm_tasks(arm["tasks"])
if st.session_state.get("drill_task") in task_options and "cmp_task" not in st.session_state:
    st.session_state["cmp_task"] = st.session_state["drill_task"]
c1, c2, c3 = st.columns([2, 2, 1])
with c1:
    task = st.selectbox("Task", task_options, format_func=task_label.get, key="cmp_task")
    layer, layer_label = pick_layer(store, chosen, "cmp_layer", task)
image_id = pick_image(store, chosen, "cmp_image")
with c2:
    target_id, target_name = pick_target(store, image_id, task, chosen, "cmp_target")
with c3:
    show_slic = st.toggle("SLIC boundaries", value=False, key="cmp_slic")
    explainer = pick_explainer(store, chosen, "cmp_explainer")
ex_name = explainer_label(explainer)

image = query.decode_png(q(store, "image_png", [image_id])[image_id])
labels = q(store, "superpixels", image_id) if show_slic else None
maps = q(store, "saliency_maps", chosen, image_id, task, target_id, layer, explainer)
preds = q(store, "predictions", chosen, image_id, task)
classes = class_names(str(arm["dataset"]))

st.subheader(f"{ex_name} at layer {layer_label} for {task_label[task].lower()} target “{target_name}”")
cols = st.columns(len(chosen))
height = figures.fit_height(image.shape, len(chosen))
for col, m in zip(cols, chosen, strict=True):
    with col:
        if m in maps:
            zero = " · all-zero map (no gradient reaches the layer)" if float(maps[m].max()) == 0.0 else ""
            st.plotly_chart(figures.overlay(image, maps[m], label_of[m] + zero, labels, height=height),
                            key=f"cmp_map_{m}")
        else:
            st.info(f"{label_of[m]}: this target is not explained for this model at this layer (its prediction has "
                    "no such pixels, or the layer was not explained for it).")
        if m in preds:
            st.plotly_chart(prediction_figure(store, task, preds[m], classes, f"prediction · {label_of[m]}", height),
                            key=f"cmp_pred_{m}")

st.subheader("Faithfulness of these explanations")
m1, m2 = st.columns([2, 1])
with m1:
    metric, variant, kind = pick_metric(store, "cmp")
value = pick_value("cmp_value", m2)
name = metric_label(metric)
shown = VALUE_SHORT[value]
st.caption(f"**{name}** (`{variant}`): {metric_note(metric)}")
curves = q(store, "faithfulness_curves", chosen, image_id, task, target_id, metric, variant, layer, explainer)
if curves.empty:
    st.info(f"No {name} score is stored for this target" + (f" at layer {layer_label}." if layer else "."))
else:
    own = curves[curves["ordering"] != "random"]
    rnd = curves[curves["ordering"] == "random"]
    table = own.pivot_table(index="model_id", columns="ordering", values=value, aggfunc="first")
    table = table[[o for o in ORDERING_LABELS if o in table.columns]]
    table = table.rename(columns=ORDERING_LABELS if kind == "curve" else {"morf": ex_name})
    if not rnd.empty:
        what = "random orderings" if kind == "curve" else "random maps"
        table[f"{what} (mean of {rnd['replicate'].nunique()})"] = rnd.groupby("model_id")[value].mean()
    table.index = [label_of.get(i, i) for i in table.index]
    if kind == "curve":
        colours = {m: figures.PALETTE[i % len(figures.PALETTE)] for i, m in enumerate(chosen)}
        left, right = st.columns([3, 2])
        left.plotly_chart(figures.perturbation_curves(curves, label_of, colours, value), key="cmp_curves")
        right.markdown(f"**{name}** ({shown}) per model and ordering: the explanation should beat the random "
                       "orderings, and its most relevant first order its reverse.")
        right.caption("Shaded: the area between the most- and least-relevant-first curves of a model (what AbPC "
                      "measures); dashed and lighter: the mean of the random orderings.")
    else:
        right = st.container()
        right.markdown(f"**{name}** ({shown}) per model: " + (
            "a derived metric has no curve of its own; it is computed from the stored curves of its base metric."
            if kind == "derived" else "a localisation metric scores the map against the target's pixel set: it "
                                      "perturbs nothing, so it has no curve."))
    right.dataframe(table.style.format("{:.4g}", na_rep="n/a"), key="cmp_scores")
    bad = curves[curves["status"].fillna("ok") != "ok"].drop_duplicates(["model_id", "ordering", "status"])
    if not bad.empty:
        right.caption("Not scored: " + ", ".join(f"{label_of.get(r.model_id, r.model_id)} "
                                                   f"{ORDERING_LABELS.get(r.ordering, r.ordering)} ({r.status})"
                                                   for r in bad.itertuples()))

explainer_grid.render(store, chosen, label_of, image, labels, image_id, task, target_id, target_name, layer,
                      layer_label)

st.subheader("How far the pruned explanations moved from the dense one")
if dense_id not in maps:
    st.info("The dense model has no map for this target, so there is nothing to compare against.")
    st.stop()
pruned = [m for m in chosen if m != dense_id and m in maps]
if not pruned:
    st.info("None of the selected pruned models has a map for this target.")
    st.stop()
# the stored similarities compare the primary layer's Grad-CAM maps; at another layer, or for another explainer,
# they are computed from the stored maps
stored = q(store, "similarity", pruned, image_id, task, target_id)
stored = stored if layer is None and explainer == "gradcam" else stored.iloc[0:0]
rows = []
cols = st.columns(len(pruned))
for col, m in zip(cols, pruned, strict=True):
    diff = maps[m] - maps[dense_id]
    col.plotly_chart(figures.difference(diff, f"{label_of[m]} − dense", figures.fit_height(image.shape, len(cols))),
                     key=f"cmp_diff_{m}")
    s = stored[stored["model_id"] == m]
    if not s.empty:
        r = s.iloc[0]
        scores, source = (r["spearman"], r["ssim"], r["topk_iou"], r["topk"]), "store"
    else:
        sim = query.map_similarity(maps[m], maps[dense_id])
        scores, source = (sim.spearman, sim.ssim, sim.topk_iou, sim.topk), "computed from the stored maps"
    rows.append((label_of[m], *scores, float(np.abs(diff).mean()), source))
numbers = ("Spearman", "SSIM", "top-k IoU", "top-k share", "mean |difference|")
st.dataframe(pd.DataFrame(rows, columns=["model", *numbers, "source"]), hide_index=True,
             column_config={c: st.column_config.NumberColumn(format="%.3f") for c in numbers})
st.caption("Difference maps: red where the pruned model attributes more than the dense one, blue where less. "
           "Spearman: rank correlation of the pixels; SSIM: structural similarity; top-k IoU: overlap of the "
           "most salient pixels (top-k share of the image).")
