"""IROF steps: the SLIC segments in removal order and the perturbed image at any step of the curve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from mtlx_core.live import removal_order, removal_ranks, step_image
from mtlx_core.store.codec import decode_png
from pages import figures
from pages.common import (
    METHOD_LABELS,
    TASK_LABELS,
    pick_arm,
    pick_image,
    pick_layer,
    pick_target,
    q,
    sparsity_label,
    store_or_stop,
)

st.title("IROF step by step")
st.caption("IROF removes the SLIC segments one after another, most salient first, replacing them by a fill value; "
           "the curve is the task score of the perturbed image divided by its clean score. A faithful map makes "
           "the curve fall fast (large area over the curve).")
store = store_or_stop()

arm = pick_arm(store, "st_arm")
levels = q(store, "arm_models", arm.name)
label_of = {r["model_id"]: sparsity_label(r) for _, r in levels.iterrows()}
c1, c2, c3, c4, c5 = st.columns(5)
model_id = c1.selectbox("Model", list(label_of), format_func=label_of.get, key="st_model")
task = c2.selectbox("Task", [t for t in TASK_LABELS if t in list(arm["tasks"])], format_func=TASK_LABELS.get,
                    key="st_task")
with c3:
    layer, layer_label = pick_layer(store, [model_id], "st_layer", task)
# the reversed ordering is stored for the primary layer's map only; random does not depend on the map
orderings = ["gradcam", "reversed", "random"] if layer is None else ["gradcam", "random"]
if st.session_state.get("st_order") not in orderings:
    st.session_state.pop("st_order", None)
ordering = c4.selectbox("Ordering", orderings, key="st_order",
                        format_func=lambda m: METHOD_LABELS[m] if m != "gradcam" else "Grad-CAM (most salient first)")
modes = q(store, "fill_modes")
fill_mode = c5.selectbox("Fill mode", modes, key="st_fill")
image_id = pick_image(store, [model_id], "st_image")
target_id, target_name = pick_target(store, image_id, task, [model_id], "st_target")

curves = q(store, "irof_curves", [model_id], image_id, task, target_id, fill_mode, layer)
curves = curves if layer is None else curves[curves["saliency_method"] != "reversed"]
maps = q(store, "saliency_maps", [model_id], image_id, task, target_id, layer)
if curves.empty or model_id not in maps:
    st.info("No IROF curve is stored for this model, target, layer and fill mode.")
    st.stop()
by_method = {r.saliency_method: r for r in curves.itertuples()}
row = by_method.get(ordering)
if row is None or len(row.curve) == 0:
    st.info(f"The {METHOD_LABELS[ordering]} curve was not computed here "
            f"({row.status if row is not None else 'not stored'}): e.g. an all-zero map has no order.")
    st.stop()
labels = q(store, "superpixels", image_id, row.settings_key)
seed = int(row.seed) if pd.notna(row.seed) else 0
order = removal_order(maps[model_id], labels, ordering, seed)
if len(order) != len(row.curve):
    st.warning(f"The stored curve has {len(row.curve)} steps but the stored superpixels have {len(order)} segments.")
n = min(len(order), len(row.curve))

k = st.slider("Segments removed", 0, n, value=min(n, max(1, n // 10)), key="st_k")
image = decode_png(q(store, "image_png", [image_id])[image_id])
score = 1.0 if k == 0 else float(row.curve[k - 1])
m1, m2, m3 = st.columns(3)
m1.metric("Step", f"{k} / {n}")
m2.metric("Score / clean score", f"{score:.4f}")
m3.metric(f"AOC ({METHOD_LABELS.get(ordering, ordering)})", f"{row.aoc:.3f}",
          help=f"AOC / segments = {row.aoc_norm:.3f}")

left, mid, right = st.columns(3)
height = max(260, figures.fit_height(image.shape, 3))
ranks = removal_ranks(order, labels)
left.plotly_chart(figures.removal_ranks(ranks, labels, k, "segments by removal step (red: removed)", height),
                  key="st_ranks")
perturbed = step_image(image.astype(np.float32) / 255.0, labels, order, k, fill_mode)
mid.plotly_chart(figures.picture(perturbed, f"perturbed image after {k} removals", height), key="st_perturbed")
others = {m: r.curve for m, r in by_method.items() if m != ordering}
right.plotly_chart(figures.curve_position({ordering: row.curve[:n], **others}, k, height), key="st_curve")
st.caption(f"Target “{target_name}” ({TASK_LABELS[task].lower()}), model {model_id}, Grad-CAM layer {layer_label}. "
           "The perturbed image is rebuilt from the stored 8-bit image, superpixels and map with the library's own "
           "perturbation code, so it matches what IROF scored up to 8-bit rounding of the image.")
