"""Layers: how faithful Grad-CAM is at each registered layer (the layer ablation), dense and pruned models."""

from __future__ import annotations

import streamlit as st

from pages import figures
from pages.common import (
    TASK_LABELS,
    VALUE_LABELS,
    layer_name,
    margin_columns,
    pick_arm,
    q,
    sparsity_label,
    store_or_stop,
)

st.title("Faithfulness by layer")
st.caption("Grad-CAM explains a prediction through one layer's activations and gradients; the study uses one "
           "layer per architecture (the primary one). The layer ablation explains the same targets at the other "
           "registered layers: does the primary layer's margin over chance hold elsewhere, and does pruning move "
           "it the same way at every layer?")
store = store_or_stop()

arm = pick_arm(store, "ly_arm")
c1, c2, _ = st.columns([1, 1, 2])
fill_mode = c1.selectbox("IROF fill mode", q(store, "fill_modes"), key="ly_fill")
value = c2.radio("AOC", list(VALUE_LABELS), horizontal=True, key="ly_value", format_func=VALUE_LABELS.get)

levels = q(store, "arm_models", arm.name)
model_ids = levels["model_id"].tolist()
model_labels = {r["model_id"]: sparsity_label(r) for _, r in levels.iterrows()}
layers = q(store, "layers", model_ids)
if layers.empty:
    st.info("No explanation of this arm is stored yet.")
    st.stop()
if not (layers["layer_role"] == "ablation").any():
    preset = q(store, "overview")["meta"].get("preset", "<preset>")
    st.info(f"**Only the primary layer is stored.** Explain the same targets at every registered layer with\n\n"
            f"```bash\npython -m mtlx_core.precompute --preset {preset} --layers all\n```\n\nIt writes to the same "
            "store (`MTLX_STORE`) and only adds rows: the models, targets and baselines already there are reused.")

margins = q(store, "margin_by_layer", fill_mode, value)
margins = margins[margins["arm_id"] == arm.name]
y_title = f"margin over random ({VALUE_LABELS[value]})"
st.caption("Each point: mean over the images of Grad-CAM's IROF score minus the random ordering's on the same "
           "targets, with its 95 % BCa bootstrap interval; filled markers are significant (Wilcoxon signed-rank, "
           "Holm-adjusted within the arm and task over its models and layers, p < 0.05). The random ordering does "
           "not depend on the layer, so the layers differ only by their Grad-CAM ordering. The dense model is "
           "black; a missing point: no scorable map at that layer (e.g. all maps zero).")
for task in [t for t in TASK_LABELS if t in list(arm["tasks"])]:
    st.markdown(f"**{TASK_LABELS[task]}**")
    mt = margins[margins["task"] == task]
    if mt.empty:
        st.info(f"No {TASK_LABELS[task].lower()} target has both a scored Grad-CAM curve and a random-ordering "
                "curve in this arm.")
        continue
    task_layers = q(store, "layers", model_ids, task)  # the primary layer may differ between tasks
    order = task_layers["layer_label"].tolist()  # primary first
    names = {lay: layer_name(lay, role) for lay, role in zip(order, task_layers["layer_role"], strict=True)}
    fig = figures.margin_by_layer(mt, order, names, model_ids, model_labels, str(arm["dense_model_id"]), y_title)
    st.plotly_chart(fig, key=f"ly_chart_{task}")

st.subheader("Margins by model, task and layer")
table = margins.assign(model=margins["model_id"].map(model_labels), task=margins["task"].map(TASK_LABELS))
cols = ["model", "model_id", "task", "layer_label", "layer_role", "margin", "ci_low", "ci_high", "margin_share",
        "gradcam", "random", "p", "p_holm", "n_images", "n_targets"]
st.dataframe(table[cols], hide_index=True, key="ly_table", column_config=margin_columns())
st.download_button("Download the layer margins (CSV)", table[cols].to_csv(index=False).encode(),
                   file_name=f"margin_by_layer_{arm.name}_{fill_mode}_{value}.csv", mime="text/csv", key="ly_csv")
