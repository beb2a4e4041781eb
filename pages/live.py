"""Live: any registered explainer's maps and IROF of a dense and a pruned model of the store on an uploaded (or
bundled) image."""

from __future__ import annotations

import hashlib
import time

import pandas as pd
import streamlit as st
import torch

from mtlx_core.live import (
    LIVE_EXPLAINERS,
    SLOW_EXPLAINERS,
    LiveModel,
    RunError,
    compute_superpixels,
    explain_image,
    irof_target,
    load_store_model,
    store_settings,
    to_input,
    working_size,
)
from mtlx_core.uploads import (
    BUNDLED_PHOTOS,
    MAX_UPLOAD_MB,
    LoadedImage,
    UploadError,
    bundled_photo,
    load_image_bytes,
)
from pages import figures
from pages.common import (
    arm_tasks,
    class_names,
    explainer_label,
    pick_arm,
    prediction_figure,
    q,
    sparsity_label,
    store_or_stop,
    task_labels,
)

MAX_ORIGINAL_PIXELS = 2_000_000  # "original" resolution above this falls back to the training scale


@st.cache_data(max_entries=8, show_spinner=False)
def read_upload(data: bytes, name: str) -> LoadedImage:
    return load_image_bytes(data, name)


@st.cache_data(max_entries=8, show_spinner=False)
def read_bundled(name: str) -> LoadedImage:
    return bundled_photo(name)


@st.cache_resource(max_entries=6, show_spinner="Loading model …")
def load_model(model_id: str, store_path: str, signature: str, depth_bins: str,
               layers: tuple[tuple[str, str], ...], layer: str | None) -> LiveModel:
    from mtlx_core.store import query

    record = query.model_record(query.open_store(store_path), model_id)
    lm = load_store_model(record, store_path, depth_bins, {"primary_layers": layers, "layer": layer})
    with torch.no_grad():  # first forward allocates and picks kernels: do it while the spinner says "loading"
        lm.model(torch.zeros(1, 3, lm.spec.height, lm.spec.width))
    return lm


st.title("Live: explain your own image")
store = store_or_stop()
task_label = task_labels(store)

source = st.radio("Image", ["Upload", "Bundled photo"], horizontal=True, key="lv_source")
try:
    if source == "Upload":
        up = st.file_uploader(f"An image file (PNG, JPEG, BMP, GIF, TIFF, WebP; at most {MAX_UPLOAD_MB} MiB)",
                              key="lv_upload", max_upload_size=MAX_UPLOAD_MB)
        if up is None:
            st.info("Upload an image, or pick one of the bundled photos (scikit-image's samples).")
            st.stop()
        img = read_upload(up.getvalue(), up.name)
    else:
        img = read_bundled(st.selectbox("Photo", BUNDLED_PHOTOS, key="lv_photo"))
except UploadError as exc:
    st.error(f"**This file cannot be used.** {exc}")
    st.stop()
for note in img.notes:
    st.info(f"Converted: {note}.")

arm = pick_arm(store, "lv_arm")
levels = q(store, "arm_models", arm.name)
label_of = {r["model_id"]: sparsity_label(r) for _, r in levels.iterrows()}
dense_id = str(arm["dense_model_id"])
pruned_ids = [m for m in label_of if m != dense_id]
if not pruned_ids:
    st.info("This arm has no pruned model yet.")
    st.stop()
c1, c2, c3, c4 = st.columns(4)
pruned_id = c1.selectbox("Pruned model", pruned_ids, format_func=label_of.get, key="lv_pruned")
task = c2.selectbox("Task", arm_tasks(arm["tasks"]), format_func=task_label.get,
                    key="lv_task")
slow = " and ".join(explainer_label(n) for n in SLOW_EXPLAINERS)
explainer = c3.selectbox("Explainer", LIVE_EXPLAINERS, format_func=explainer_label, key="lv_explainer",
                         help="Every registered explainer, on the same targets and at the same layer as the stored "
                              "study. The gradient CAMs take one forward and one backward per model; " + slow
                              + " are slower (Score-CAM forwards one masked copy of the image per channel it masks, "
                                "Integrated Gradients one per path step and target): seconds to minutes on a CPU.")
ex_name = explainer_label(explainer)
scale = c4.radio("Resolution", ["model", "original"], horizontal=True, key="lv_scale",
                 format_func=lambda s: {"model": "training scale (fast)", "original": "original (slow)"}[s])

settings = q(store, "explain_settings")
slic, irof_settings = store_settings(settings)
try:
    models = {m: load_model(m, str(store.path), store.signature, settings.get("depth_bins", "equal_width"),
                            tuple(map(tuple, settings.get("primary_layers") or [])), settings.get("layer"))
              for m in (dense_id, pruned_id)}
except (RunError, KeyError, ValueError) as exc:
    st.error(f"**The model cannot be loaded.** {exc}")
    st.stop()
if any(lm.checkpoint_matches is False for lm in models.values()):
    st.warning("A run folder holds a different checkpoint than the one the store was computed from.")
if scale == "original" and img.height * img.width > MAX_ORIGINAL_PIXELS:
    st.warning(f"{img.width} × {img.height} px is too large to explain at the original resolution on a CPU "
               f"(limit {MAX_ORIGINAL_PIXELS / 1e6:.0f} megapixels): using the training scale.")
    scale = "model"
size = working_size(img.height, img.width, models[dense_id].spec, scale)
x = to_input(img.array, size)
digest = hashlib.sha1(img.array.tobytes()).hexdigest()[:16]
key = (digest, dense_id, pruned_id, task, size, explainer)
cache = st.session_state.setdefault("lv_results", {})
if key not in cache:
    with st.spinner(f"Computing {ex_name} …"):
        results, seconds = {}, {}
        for m, lm in models.items():
            t0 = time.perf_counter()
            try:
                results[m] = explain_image(lm, x, task, explainer=explainer)
            except (RuntimeError, ValueError) as exc:  # e.g. out of memory at the original resolution
                st.error(f"**{ex_name} failed for the {label_of[m]} model.** {exc}")
                st.stop()
            seconds[m] = time.perf_counter() - t0
    cache.clear()
    cache[key] = (results, seconds)
results, seconds = cache[key]
st.caption(f"{img.name}: {img.width} × {img.height} px, explained at {size[1]} × {size[0]}. {ex_name} took "
           + ", ".join(f"{seconds[m]:.2f} s ({label_of[m]})" for m in models) + ".")

names = {tid: e.target_name for r in results.values() for tid, e in r.maps.items()}
if not names:
    st.info("Neither model predicts any target of this task on the image.")
    st.stop()
both = [t for t in sorted(names) if all(t in r.maps for r in results.values())]
order = both + [t for t in sorted(names) if t not in both]  # targets both models explain first
target_id = st.selectbox("Target", order, format_func=names.get, key="lv_target")
picture = x[0].permute(1, 2, 0).numpy()
classes = class_names(str(arm["dataset"]))
cols = st.columns(2)
height = figures.fit_height(picture.shape, 2)
for col, m in zip(cols, models, strict=True):
    with col:
        e = results[m].maps.get(target_id)
        if e is None:
            st.info(f"{label_of[m]}: the model predicts no pixel for “{names[target_id]}”.")
        else:
            title = f"{label_of[m]}" + (" · all-zero map" if e.is_zero else "")
            st.plotly_chart(figures.overlay(picture, e.map_input, title, height=height), key=f"lv_map_{m}")
        st.plotly_chart(prediction_figure(store, task, results[m].prediction, classes, f"prediction · {label_of[m]}",
                                           height), key=f"lv_pred_{m}")

st.subheader("IROF on this image")
irof_key = (*key, target_id)
if st.button(f"Run IROF ({ex_name} and the random / reversed baselines)", key="lv_irof"):
    bar = st.progress(0.0, text="SLIC superpixels …")
    sp = compute_superpixels(x[0], slic)
    rows = []
    for i, (m, lm) in enumerate(models.items()):
        bar.progress((i + 0.2) / len(models), text=f"IROF of the {label_of[m]} model ({sp.n_segments} segments) …")
        e = results[m].maps.get(target_id)
        if e is None:
            continue
        for method, r in irof_target(lm, x, e, sp, irof_settings).items():
            rows.append({"model_id": m, "saliency_method": method, "curve": r.curve, "aoc": r.aoc,
                         "aoc_norm": r.aoc_norm, "status": r.status})
    bar.progress(1.0, text="done")
    st.session_state["lv_irof_result"] = (irof_key, pd.DataFrame(rows))
stored = st.session_state.get("lv_irof_result")
if stored is not None and stored[0] == irof_key:
    curves = stored[1]
    colours = {m: figures.PALETTE[i] for i, m in enumerate(models)}
    st.plotly_chart(figures.irof_curves(curves, label_of, colours), key="lv_curves")
    aoc = curves.pivot_table(index="model_id", columns="saliency_method", values="aoc", aggfunc="first")
    aoc.index = [label_of.get(i, i) for i in aoc.index]
    st.dataframe(aoc.style.format("{:.3f}", na_rep="n/a"))
    skipped = curves[curves["status"] != "ok"]
    if not skipped.empty:
        st.caption("Not computed: " + ", ".join(f"{label_of[r.model_id]} {r.saliency_method} ({r.status})"
                                                 for r in skipped.itertuples()))
else:
    st.caption(f"IROF uses the store's settings: {slic.n_segments} SLIC segments, fill mode "
               f"{irof_settings.fill_mode}; it forwards about {3 * slic.n_segments} perturbed images per model.")
