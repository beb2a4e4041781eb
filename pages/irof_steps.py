"""Perturbation steps: the perturbed images behind any stored curve of any curve metric, step by step."""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from mtlx_core.live import perturbation_steps, perturbed_steps
from pages import figures
from pages.common import (
    ORDERING_LABELS,
    arm_tasks,
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
    q,
    sparsity_label,
    store_or_stop,
    task_labels,
)


@st.cache_data(max_entries=64, show_spinner=False)
def perturbed(metric: str, settings: dict[str, Any], image: np.ndarray, saliency: np.ndarray | None,
              seed: int | None, labels: np.ndarray | None, ordering: str, point: int) -> np.ndarray:
    return perturbed_steps(metric, settings, image, saliency, seed, labels, ordering, [point])[0]


@st.cache_data(max_entries=16, show_spinner=False)
def step_order(metric: str, settings: dict[str, Any], image: np.ndarray, saliency: np.ndarray | None,
               seed: int | None, labels: np.ndarray | None, ordering: str) -> tuple[np.ndarray, np.ndarray]:
    return perturbation_steps(metric, settings, image, saliency, seed, labels, ordering)


st.title("Perturbation steps")
st.caption("A perturbation metric changes the image step after step (the most relevant pixels or segments "
           "first, the least relevant first, or in a random order) and its curve is the task score of each "
           "perturbed image over the clean score. Pick a stored curve (of any stored explainer's map) and walk "
           "through the images it scored.")
# the selection lives in the URL (a view can be shared)
URL_KEYS = (
    "st_arm", "st_model", "st_task", "st_layer", "st_metric", "st_variant", "st_order", "st_image",
    "st_target", "st_explainer", "st_k",
)
keep_in_url(URL_KEYS)
store = store_or_stop()
task_label = task_labels(store)

arm = pick_arm(store, "st_arm")
levels = q(store, "arm_models", arm.name)
label_of = {r["model_id"]: sparsity_label(r) for _, r in levels.iterrows()}
c1, c2, c3 = st.columns(3)
model_id = c1.selectbox("Model", list(label_of), format_func=label_of.get, key="st_model")
task = c2.selectbox("Task", arm_tasks(arm["tasks"]), format_func=task_label.get,
                    key="st_task")
with c3:
    layer, layer_label = pick_layer(store, [model_id], "st_layer", task)
c4, c5, c6 = st.columns(3)
with c4:
    metric, variant, _ = pick_metric(store, "st", kinds=("curve",))
name = metric_label(metric)
image_id = pick_image(store, [model_id], "st_image")
target_id, target_name = pick_target(store, image_id, task, [model_id], "st_target")
# the explainers with a map of this target at this layer (the layer ablation is Grad-CAM's): no selector for one
explainer = pick_explainer(store, [model_id], "st_explainer", c3, (image_id, task, target_id), layer)
ex_name = explainer_label(explainer)

curves = q(store, "faithfulness_curves", [model_id], image_id, task, target_id, metric, variant, layer, explainer)
ok = curves[(curves["status"] == "ok") & (curves["curve"].map(lambda c: c is not None and len(c) > 0))]
orderings = [o for o in ORDERING_LABELS if o in set(ok["ordering"])]
if not orderings:
    why = ", ".join(sorted({f"{o}: {s}" for o, s in zip(curves["ordering"], curves["status"], strict=True)}))
    st.info(f"No {name} curve (`{variant}`) of {ex_name} is stored for this model, target and layer"
            + (f" ({why}: e.g. an all-zero map has no order)." if why else "."))
    st.stop()
if st.session_state.get("st_order") not in orderings:
    st.session_state.pop("st_order", None)
ordering = c5.selectbox("Ordering", orderings, key="st_order", format_func=ORDERING_LABELS.get)
rows = ok[ok["ordering"] == ordering].sort_values("replicate")
if ordering == "random":
    seeds = dict(zip(rows["replicate"].astype(int), rows["seed"], strict=True))
    if st.session_state.get("st_rep") not in seeds:
        st.session_state.pop("st_rep", None)
    rep = c6.selectbox("Random replicate", list(seeds), key="st_rep",
                       format_func=lambda j: f"{j + 1} of {len(seeds)} (seed {int(seeds[j])})")
    row = rows[rows["replicate"] == rep].iloc[0]
else:
    row = rows.iloc[0]
st.caption(f"**{name}** (`{variant}`): {metric_note(metric)}")

curve, xs = np.asarray(row["curve"], float), np.asarray(row["x"], float)
n = len(curve)
if n > 1:
    if int(st.session_state.get("st_k", 0)) > n - 1:
        st.session_state.pop("st_k", None)
    j = st.slider("Curve point", 0, n - 1, value=min(n - 1, max(1, n // 4)), key="st_k",
                  help="the curve's evaluated steps (0 is the first point of the curve)")
else:
    j = 0
image = q(store, "image", image_id)
saliency = None if ordering == "random" else q(store, "saliency_maps", [model_id], image_id, task, target_id,
                                                   layer, explainer).get(model_id)
try:
    labels = q(store, "superpixels", image_id)
except KeyError:
    labels = None
settings = q(store, "settings_of", metric, variant)
seed = None if ordering != "random" else int(row["seed"])
try:
    steps_map, steps = step_order(metric, settings, image, saliency, seed, labels, ordering)
    picture = perturbed(metric, settings, image, saliency, seed, labels, ordering, j)
except ValueError as exc:
    st.warning(f"The perturbed images of this curve cannot be rebuilt: {exc}")
    st.stop()
if len(steps) != n:
    st.warning(f"The stored curve has {n} points but the metric's plan {len(steps)}: the store was computed with "
               "other settings or code.")
k = int(steps[min(j, len(steps) - 1)])

m1, m2, m3, m4 = st.columns(4)
m1.metric("Curve point", f"{j} / {n - 1}", help=f"{k} perturbation steps done")
m2.metric("Share perturbed", f"{xs[j]:.1%}")
m3.metric("Score / clean score", f"{curve[j]:.4f}")
m4.metric(f"{name} score of this curve", f"{row['score']:.4g}", help=f"normalised: {row['score_norm']:.4g}")

left, mid, right = st.columns(3)
height = max(260, figures.fit_height(image.shape, 3))
n_steps = int(row["n_steps"]) if row["n_steps"] else int(steps_map.max())
left.plotly_chart(figures.step_map(steps_map, n_steps, k, "pixels by step (red: changed by the shown step)",
                                   height=height), key="st_steps")
mid.plotly_chart(figures.picture(picture, f"perturbed image at point {j}", height), key="st_perturbed")
shown = {str(r.ordering): (np.asarray(r.x, float), np.asarray(r.curve, float)) for r in ok.itertuples()
         if r.ordering in ("morf", "lerf")}
mean = figures.random_mean(ok)
if ordering == "random":
    shown["random"] = (xs, curve)
elif mean is not None:
    shown["random"] = mean[:2]
names = {**ORDERING_LABELS, "random": "random (this replicate)" if ordering == "random" else
         f"random (mean of {mean[2] if mean else 0})"}
right.plotly_chart(figures.curve_position(shown, (float(xs[j]), float(curve[j])), names, height), key="st_curve")
st.caption(f"Target “{target_name}” ({task_label[task].lower()}), model {model_id}, {ex_name} at layer {layer_label}, "
           f"{ORDERING_LABELS[ordering]}. The perturbed image is rebuilt from the stored 8-bit image, map and "
           "superpixels with the metric's own plan and the engine's perturbation code, so it is what the metric "
           "scored up to the 8-bit rounding of the image.")
