"""What every page shares: the store (with clear messages when it is missing or busy), cached queries, pickers.

Not a page: ``app.py`` lists the pages with ``st.navigation``; this module is imported by them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from mtlx_core.store import query
from pages import figures

THUMBNAILS = 8  # images shown as thumbnails above the picker (all are in the picker)
METHOD_LABELS = {"gradcam": "Grad-CAM", "random": "random baseline", "reversed": "reversed baseline"}
EXPLAINER_LABELS = {"gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "hirescam": "HiResCAM", "xgradcam": "XGrad-CAM",
                    "layercam": "LayerCAM", "scorecam": "Score-CAM", "integrated_gradients": "Integrated Gradients"}


def task_labels(store: query.Store) -> dict[str, str]:
    """``{task: label}`` of every task in the store (plugin tasks too: ``query.task_info``)."""
    return {t: i["label"] for t, i in q(store, "task_info").items()}


def prediction_figure(store: query.Store, task: str, pred: Any, classes: Sequence[str], title: str,
                      height: int = 220) -> Any:
    """``figures.prediction`` drawn as the task's recorded display kind, with its label on the hover."""
    info = q(store, "task_info").get(task, {})
    return figures.prediction(info.get("display", "scalar"), pred, classes, title, height,
                              quantity=str(info.get("label", task)).lower())


def arm_tasks(tasks: Sequence[str]) -> list[str]:
    """An arm's (or any) tasks in the app's order (``query.task_order``)."""
    return query.task_order(list(tasks))


def explainer_label(name: str) -> str:
    return EXPLAINER_LABELS.get(name, name)


def pick_explainer(store: query.Store, model_ids: Sequence[str] | None, key: str, container: Any = st,
                   target: tuple[str, str, int] | None = None, layer: str | None = None) -> str:
    """Explainer selector among the explainers stored for the models (Grad-CAM first and the default); with
    ``target`` (image id, task, target id) only those with a map of that target, at ``layer`` (a stored label;
    ``None``: the primary layer). A store with Grad-CAM alone shows no selector. The caption says which models lack
    an explainer (a preset may run the extra explainers on a sub-grid: the dense models and the first pruned level
    of each arm)."""
    ids = None if model_ids is None else list(model_ids)
    ex = q(store, "explainers", ids, *(target or (None, None, None)), layer)
    names = ex["explainer"].tolist() or ["gradcam"]
    if key in st.session_state and st.session_state[key] not in names:
        del st.session_state[key]
    if len(names) == 1:
        return str(names[0])
    n_models = dict(zip(ex["explainer"], ex["n_models"].astype(int), strict=True))
    total = max(n_models.values())

    def name(n: str) -> str:
        some = f" · {n_models[n]} of {total} models" if n_models[n] < total else ""
        return explainer_label(n) + some

    return str(container.selectbox("Explainer", names, format_func=name, key=key,
                                   help="Every faithfulness metric is computed on every explainer's maps. The extra "
                                        "explainers may cover a sub-grid of the models (the demo: the dense models "
                                        "and the first pruned level of each arm)."))


def store_or_stop() -> query.Store:
    """The current store snapshot; explains and stops the page when there is none or it is being written."""
    path = query.store_path()
    try:
        return query.open_store(path)
    except query.StoreMissingError:
        st.info(f"**No study store at `{path}` yet.**\n\nBuild the tiny one (about a minute) or the demo one, "
                "then reload this page:\n\n```bash\npython -m mtlx_core.precompute --preset smoke\n"
                "python -m mtlx_core.precompute --preset demo\n```\n\nThe app reads the store named by the "
                "environment variable `MTLX_STORE` (default `models_store/study.duckdb`).")
        st.caption(query.BUILD_HINT)
    except query.StoreBusyError as exc:
        st.warning(f"**The store is being written.** {exc}\n\nWhat is ready appears here as soon as precompute "
                   "publishes its first snapshot; reload in a moment.")
    except query.StoreError as exc:
        st.error(f"**The store cannot be read.** {exc}")
    st.stop()
    raise RuntimeError("unreachable")  # st.stop() raises; this keeps type checkers honest


@st.cache_data(max_entries=512, show_spinner=False)
def _cached(name: str, path: str, signature: str, args: tuple[Any, ...]) -> Any:
    return getattr(query, name)(query.open_store(path), *args)


def q(store: query.Store, name: str, *args: Any) -> Any:
    """``query.<name>(store, *args)``, cached per store snapshot (a new snapshot invalidates it)."""
    return _cached(name, str(store.path), store.signature, tuple(tuple(a) if isinstance(a, list) else a
                                                                  for a in args))


def keep_in_url(keys: Sequence[str]) -> None:
    """Keep a page's selection in the URL (``st.query_params``) so a view can be shared. Call at the top of the
    page, before its widgets: a key the session does not hold yet is seeded from the URL (JSON, so numbers stay
    numbers); every key the session holds (the widgets' values since the last interaction) is written back. A
    value in the URL that a widget does not offer is dropped by the page's own checks or by the widget."""
    for key in keys:
        if key in st.session_state:
            try:
                text = json.dumps(st.session_state[key])
            except TypeError:
                continue
            if st.query_params.get(key) != text:
                st.query_params[key] = text
        elif key in st.query_params:
            try:
                st.session_state[key] = json.loads(st.query_params[key])
            except ValueError:
                del st.query_params[key]


def class_names(dataset: str) -> tuple[str, ...]:
    return query.class_names(dataset)


def sparsity_label(row: pd.Series | dict[str, Any]) -> str:
    """``dense`` or ``50 %`` (achieved in brackets when it differs by more than a point)."""
    if row["is_dense"]:
        return "dense"
    target, achieved = float(row["target_sparsity"]), float(row["achieved_sparsity"])
    label = f"{target * 100:.4g} %"
    return label + (f" (achieved {achieved * 100:.1f} %)" if abs(achieved - target) > 0.01 else "")


def pick_arm(store: query.Store, key: str) -> pd.Series:
    """Arm selector (remembers a drill-down from the Overview page)."""
    arms = q(store, "arms")
    if arms.empty:
        st.info("The store has no arm yet: precompute publishes each arm when it is finished.")
        st.stop()
    ids = arms["arm_id"].tolist()
    wanted = st.session_state.get("drill_arm")
    if wanted in ids and key not in st.session_state:
        st.session_state[key] = wanted
    labels = dict(zip(arms["arm_id"], arms["label"], strict=True))
    arm_id = st.selectbox("Arm", ids, format_func=lambda a: labels[a] or a, key=key)
    return arms.set_index("arm_id").loc[arm_id]


def pick_image(store: query.Store, model_ids: list[str], key: str) -> str:
    """Image picker with thumbnails; only images explained for the given models are offered."""
    imgs = q(store, "images")
    explained = set(pd.concat([q(store, "model_images", m) for m in model_ids])["image_id"]) if model_ids else set()
    imgs = imgs[imgs["image_id"].isin(explained)] if explained else imgs
    if imgs.empty:
        st.info("No image has been explained for these models yet.")
        st.stop()
    ids = imgs["image_id"].tolist()
    idx = dict(zip(imgs["image_id"], imgs["idx"], strict=True))
    image_id = st.radio("Image", ids, format_func=lambda i: f"#{idx[i]}", horizontal=True, key=key)
    shown = ids[:THUMBNAILS]
    pngs = q(store, "image_png", shown)
    cols = st.columns(THUMBNAILS)
    for col, i in zip(cols, shown, strict=False):
        col.image(pngs[i], caption=("▶ " if i == image_id else "") + f"#{idx[i]}", width="stretch")
    return str(image_id)


def pick_target(store: query.Store, image_id: str, task: str, model_ids: list[str], key: str) -> tuple[int, str]:
    """Target picker by name (class, depth bin or octant) among the targets explained on this image."""
    t = q(store, "targets", image_id, task, model_ids)
    if t.empty:
        st.info(f"No {task} target is explained on this image for these models.")
        st.stop()
    names = dict(zip(t["target_id"].astype(int), t["target"], strict=True))
    everywhere = t.index[t["n_models"] == t["n_models"].max()][0]  # default: a target every model explains
    tid = st.selectbox("Target", list(names), index=int(everywhere), format_func=lambda i: names[i], key=key)
    return int(tid), names[int(tid)]


def layer_name(label: str, role: str) -> str:
    """A Grad-CAM layer's label as the pages show it: the study's layer is marked ``(primary)``."""
    return f"{label} (primary)" if role == "primary" else label


def pick_layer(store: query.Store, model_ids: list[str], key: str, task: str | None = None
               ) -> tuple[str | None, str]:
    """Grad-CAM layer selector among the layers the models have for the task (primary first).

    Returns the ``layer`` argument of ``saliency_maps`` / ``faithfulness_curves`` (``None`` for the primary layer) and
    the chosen layer's label."""
    lay = q(store, "layers", model_ids, task)
    if lay.empty:
        st.info("No explanation is stored for these models yet.")
        st.stop()
    labels = lay["layer_label"].tolist()
    role = dict(zip(labels, lay["layer_role"], strict=True))
    n_models = dict(zip(labels, lay["n_models"].astype(int), strict=True))
    if key in st.session_state and st.session_state[key] not in labels:  # e.g. other models picked since
        del st.session_state[key]

    def name(label: str) -> str:
        some = f" · {n_models[label]} of {len(model_ids)} models" if n_models[label] < len(model_ids) else ""
        return layer_name(label, role[label]) + some

    label = st.selectbox("Grad-CAM layer", labels, format_func=name, key=key, disabled=len(labels) == 1,
                         help="The study's layer is the primary one; the others are the layer ablation (the Layers "
                              "page compares them). Some metrics are computed at the primary layer only.")
    return (None if role[label] == "primary" else str(label)), str(label)


def margin_columns() -> dict[str, Any]:
    """``st.dataframe`` column settings of a table of margins over chance (``beats_chance``, ``margin_by_layer``)."""
    score = st.column_config.NumberColumn(format="%.4g")
    return {**dict.fromkeys(("margin", "ci_low", "ci_high", "random"), score),
            "gradcam": st.column_config.NumberColumn("Grad-CAM", format="%.4g"),
            "margin_share": st.column_config.NumberColumn("margin / random", format="percent"),
            "p": st.column_config.NumberColumn("Wilcoxon p", format="%.2g"),
            "p_holm": st.column_config.NumberColumn("Holm p", format="%.2g"), "layer_label": "layer",
            "layer_role": "role"}


# --- faithfulness metrics --------------------------------------------------------------------------------

METRIC_LABELS = {"irof": "IROF", "deletion": "Deletion", "insertion": "Insertion", "abpc": "AbPC",
                 "road": "ROAD", "region": "Region perturbation (AOPC)", "pixelflip": "Pixel-flipping",
                 "faithcorr": "Faithfulness correlation", "rma": "Relevance mass accuracy",
                 "pointing": "Pointing game", "leakage": "Off-target leakage"}
#: one line per metric: what it does and what its ``score`` is
METRIC_NOTES = {
    "irof": "SLIC segments replaced by the fill, most relevant first; score = area over the curve (AOC), "
            "normalised = AOC / segments.",
    "deletion": "pixels replaced by the fill in equal steps, most relevant first; score = area under the curve "
                "(AUC, lower = more faithful), normalised = 1 − AUC.",
    "insertion": "pixels copied back into a blurred copy in equal steps, most relevant first; score = AUC "
                 "(higher = more faithful).",
    "road": "most relevant pixels removed at fixed percentiles of the clean image and imputed from their "
            "neighbours (noisy linear imputation); score from the curve, normalised = higher is more faithful.",
    "region": "square patches perturbed cumulatively, most relevant first; score = AOPC (mean drop).",
    "pixelflip": "channel features flipped to the fill in steps, most relevant first; score = area under the "
                 "curve (lower = more faithful).",
    "faithcorr": "Pearson correlation between the attribution of random subsets and the score drop when they "
                 "are replaced; normalised = (r + 1) / 2.",
    "abpc": "area between the least- and the most-relevant-first curves of its base metric (normalised MoRF "
            "minus LeRF), computed from the stored curves: it has no curve of its own; chance is 0.",
    "rma": "share of the map's mass inside the target's pixel set; no perturbation, so no curve.",
    "pointing": "1 when the map's maximum lies in the target's pixel set, else 0; no perturbation, so no curve.",
    "leakage": "share of the map's |S| most relevant pixels outside the target's pixel set S (normalised = "
               "1 − leakage); no perturbation, so no curve.",
}
VALUE_LABELS = {"score_norm": "normalised (higher = more faithful)", "score": "the metric's own score"}
VALUE_SHORT = {"score_norm": "normalised", "score": "score"}  # in titles and legends
SIMILARITY_LABELS = {"spearman": "Spearman rank correlation", "ssim": "SSIM", "topk_iou": "top-k IoU"}
SERIES_LABELS = {"explainer": "Grad-CAM", "random": "random ordering (mean of K)",
                 "reversed": "reversed ordering", "margin": "margin over chance"}
ORDERING_LABELS = {"morf": "most relevant first", "lerf": "least relevant first", "random": "random ordering"}


def metric_label(metric: str) -> str:
    """``IROF``; a derived metric of another base: ``AbPC of Deletion``."""
    if metric.startswith("abpc_"):
        return f"AbPC of {METRIC_LABELS.get(metric[5:], metric[5:])}"
    return METRIC_LABELS.get(metric, metric)


def metric_note(metric: str) -> str:
    return METRIC_NOTES.get("abpc" if metric.startswith("abpc") else metric, "")


def file_tag(metric: str, variant: str, value: str) -> str:
    """``irof_fill-quantus_score_norm``: the metric choice in a download's file name."""
    return "_".join(p.replace("=", "-").replace(",", "_") for p in (metric, variant, value))


def pick_metric(store: query.Store, key: str, kinds: tuple[str, ...] | None = None) -> tuple[str, str, str]:
    """Metric selector (``{key}_metric``), and a variant selector (``{key}_variant``, default variant
    preselected) when the metric has several; ``kinds`` restricts the metrics (``curve``, ``map``, ``derived``).
    Returns ``(metric, variant, kind)``."""
    mv = q(store, "metric_variants")
    if kinds is not None:
        mv = mv[mv["kind"].isin(kinds)]
    if mv.empty:
        st.info("The store has no faithfulness score " + (f"of a {' or '.join(kinds)} metric " if kinds else "")
                + "yet: precompute publishes each arm when it is finished.")
        st.stop()
    metrics = list(dict.fromkeys(mv["metric"]))
    metric = st.selectbox("Faithfulness metric", metrics, format_func=metric_label, key=f"{key}_metric",
                          help="Each metric measures faithfulness differently; the study's default is IROF.")
    rows = mv[mv["metric"] == metric]
    variants = rows["variant"].tolist()
    default = str(rows.loc[rows["is_default"], "variant"].iloc[0]) if rows["is_default"].any() else variants[0]
    if len(variants) == 1:
        return str(metric), variants[0], str(rows["kind"].iloc[0])
    vkey = f"{key}_variant"
    if st.session_state.get(vkey) not in variants:  # e.g. another metric picked since
        st.session_state.pop(vkey, None)
    variant = st.selectbox("Variant", variants, index=variants.index(default), key=vkey,
                           format_func=lambda v: v + (" (default)" if v == default else ""),
                           help="The settings that distinguish runs of one metric (fill, depth floor, ...).")
    return str(metric), str(variant), str(rows.loc[rows["variant"] == variant, "kind"].iloc[0])


def pick_value(key: str, container: Any = st) -> str:
    """``score_norm`` or ``score`` (radio ``key``)."""
    return str(container.radio("Value", list(query.VALUES), horizontal=True, key=key, format_func=VALUE_LABELS.get,
                               help="normalised: oriented and scaled to [0, 1], comparable across metrics; the "
                                    "metric's own score: e.g. IROF's AOC, RISE's AUC"))
