"""Layers: how faithful Grad-CAM is at each registered layer (the layer ablation), dense and pruned models."""

from __future__ import annotations

import streamlit as st

from pages import figures
from pages.common import (
    VALUE_SHORT,
    arm_tasks,
    explainer_label,
    file_tag,
    keep_in_url,
    layer_name,
    margin_columns,
    metric_label,
    metric_note,
    pick_arm,
    pick_explainer,
    pick_metric,
    pick_value,
    q,
    sparsity_label,
    store_or_stop,
    task_labels,
)

st.title("Faithfulness by layer")
st.caption("Grad-CAM explains a prediction through one layer's activations and gradients; the study uses one "
           "layer per architecture (the primary one). The layer ablation explains the same targets at the other "
           "registered layers: does the primary layer's margin over chance hold elsewhere, and does pruning move "
           "it the same way at every layer?")
# the selection lives in the URL (a view can be shared)
URL_KEYS = ("ly_arm", "ly_metric", "ly_variant", "ly_value", "ly_explainer")
keep_in_url(URL_KEYS)
store = store_or_stop()
task_label = task_labels(store)

arm = pick_arm(store, "ly_arm")
levels = q(store, "arm_models", arm.name)
model_ids = levels["model_id"].tolist()
c1, c2, c_ex = st.columns([2, 2, 1])
with c1:
    metric, variant, kind = pick_metric(store, "ly")
value = pick_value("ly_value", c2)
explainer = pick_explainer(store, model_ids, "ly_explainer", c_ex)
ex_name = explainer_label(explainer)
name = metric_label(metric)
st.caption(f"**{name}** (`{variant}`): {metric_note(metric)}")
if explainer != "gradcam":
    st.caption(f"The layer ablation is Grad-CAM's: {ex_name} is stored at the primary layer only, so it has one "
               "point per model here.")
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

margins = q(store, "margin_by_layer", metric, variant, value, 2_000, 0, explainer)
margins = margins[margins["arm_id"] == arm.name]
scored = set(margins["layer_label"])
if (layers["layer_role"] == "ablation").any() and not (set(layers["layer_label"]) - {""}) <= scored:
    st.info(f"**{name}** (`{variant}`) is scored at {len(scored)} of the {len(set(layers['layer_label']))} stored "
            "layers of this arm: precompute may score the ablation layers with fewer metrics and variants than the "
            "primary layer. Metrics with a point at every layer can be compared across layers.")
y_title = f"margin of {name} over chance ({VALUE_SHORT[value]})"
chance = ("AbPC itself (its most- minus its least-relevant-first score; chance is 0)" if kind == "derived" else
          f"{ex_name}'s {name} score minus the mean of the random orderings on the same targets")
st.caption(f"Each point: mean over the images of {chance}, with its 95 % BCa bootstrap interval; filled markers "
           "are significant (Wilcoxon signed-rank, Holm-adjusted within the arm and task over its models and layers, "
           "p < 0.05). The random ordering does not depend on the layer, so the layers differ only by their Grad-CAM "
           "map. The dense model is black; a missing point: no scorable map at that layer (e.g. all maps zero).")
for task in arm_tasks(arm["tasks"]):
    st.markdown(f"**{task_label[task]}**")
    mt = margins[margins["task"] == task]
    if mt.empty:
        st.info(f"No {task_label[task].lower()} target has both a {name} score of {ex_name} and of the random "
                "orderings in this arm.")
        continue
    task_layers = q(store, "layers", model_ids, task)  # the primary layer may differ between tasks
    order = task_layers["layer_label"].tolist()  # primary first
    names = {lay: layer_name(lay, role) for lay, role in zip(order, task_layers["layer_role"], strict=True)}
    fig = figures.margin_by_layer(mt, order, names, model_ids, model_labels, str(arm["dense_model_id"]), y_title)
    st.plotly_chart(fig, key=f"ly_chart_{task}")

st.subheader("Margins by model, task and layer")
table = margins.assign(model=margins["model_id"].map(model_labels), task=margins["task"].map(task_label))
cols = ["model", "model_id", "task", "layer_label", "layer_role", "margin", "ci_low", "ci_high", "margin_share",
        "gradcam", "random", "p", "p_holm", "n_images", "n_targets"]
st.dataframe(table[cols], hide_index=True, key="ly_table", column_config=margin_columns())
st.download_button("Download the layer margins (CSV)", table[cols].to_csv(index=False).encode(),
                   file_name=f"margin_by_layer_{arm.name}_{file_tag(metric, variant, value)}"
                   f"{'' if explainer == 'gradcam' else '_' + explainer}.csv", mime="text/csv",
                   key="ly_csv")
