"""Overview: what the store holds, and the study's Figure 4 on it (faithfulness and task performance vs sparsity)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from mtlx_core.store import query
from pages import cross_task_figures, figures
from pages.common import (
    SERIES_LABELS,
    SIMILARITY_LABELS,
    VALUE_SHORT,
    arm_tasks,
    explainer_label,
    file_tag,
    keep_in_url,
    margin_columns,
    metric_label,
    metric_note,
    pick_explainer,
    pick_metric,
    pick_value,
    q,
    store_or_stop,
    task_labels,
)
from pages.similarity_figures import similarity_vs_sparsity

#: verdict of ``query.beats_chance`` -> how the Overview shows it
VERDICT_STYLE: dict[str, tuple[Callable[..., Any], str]] = {
    "clearly beats chance": (st.success, ":material/check_circle:"),
    "beats chance": (st.info, ":material/check:"),
    "no better than chance": (st.warning, ":material/remove:"),
    "worse than chance": (st.error, ":material/close:"),
}
BEATS = ("clearly beats chance", "beats chance")
XT_AUTO_MAPS = 10_000  # the cross-task similarity is computed without asking up to this many stored maps


def signed(x: float, sign: str = "+") -> str:
    """A score difference: three decimals, two significant digits when it is smaller than 0.001."""
    return f"{x:{sign}.3f}" if x == 0 or abs(x) >= 0.001 else f"{x:{sign}.2g}"


def share(x: float) -> str:
    """A share in percent with one decimal (so 19.9 % is not shown as the 20 % bar of "clearly")."""
    if pd.isna(x):
        return "n/a"
    return f"{x * 100:.1f} %" if abs(x) >= 0.01 else f"{x * 100:.2g} %"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def dense_name(arm_label: str) -> str:
    """The dense model of an arm by its arm's label without the pruning method (the label's last part)."""
    return arm_label.rsplit(" · ", 1)[0] if " · " in arm_label else arm_label


def chance_line(r: pd.Series, arm_label: str, unit: str, derived: bool = False) -> str:
    """One dense model x task cell of ``beats_chance`` in plain words (``derived``: AbPC, whose chance is 0)."""
    against = "over chance (0: the reversed order)" if derived else "over the random ordering"
    of_random = "" if pd.isna(r["margin_share"]) else f", {share(r['margin_share'])} of the random baseline's score"
    return (f"**{dense_name(arm_label)}** — {task_label.get(r['task'], r['task'])}: Grad-CAM at layer "
            f"`{r['layer_label']}` **{r['verdict']}**: {signed(r['margin'])} {unit} {against} "
            f"(95 % CI [{signed(r['ci_low'], '')}, {signed(r['ci_high'], '')}]){of_random}; Wilcoxon p = "
            f"{r['p']:.2g}, Holm-adjusted {r['p_holm']:.2g}; {plural(int(r['n_images']), 'image')}, "
            f"{plural(int(r['n_targets']), 'target')}.")


st.title("Faithfulness of explanations under pruning")
# the selection lives in the URL (a view can be shared)
URL_KEYS = (
    "ov_metric", "ov_variant", "ov_value", "ov_x", "ov_margin", "ov_baselines", "ov_model", "ov_sim",
    "ov_explainer", "ov_xt",
)
keep_in_url(URL_KEYS)
store = store_or_stop()
task_label = task_labels(store)

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
                                      ("Explanations", "explanations"), ("Faithfulness scores", "faithfulness"),
                                      ("Similarities", "similarity")], strict=True):
    col.metric(label, f"{counts.get(table, 0):,}")
if counts.get("faithfulness", 0) == 0:
    st.info("No faithfulness score has been published yet; precompute publishes each arm when it is finished.")
    st.stop()

arms = q(store, "arms")
arm_labels = dict(zip(arms["arm_id"], arms["label"], strict=True))
c1, c2, c_ex = st.columns([2, 2, 1])
with c1:
    metric, variant, kind = pick_metric(store, "ov")
value = pick_value("ov_value", c2)
explainer = pick_explainer(store, None, "ov_explainer", c_ex)
ex_name = explainer_label(explainer)
name = metric_label(metric)
derived = kind == "derived"
st.caption(f"**{name}** (`{variant}`): {metric_note(metric)}")
if explainer != "gradcam":
    st.caption(f"Explainer: **{ex_name}**. Every metric is computed on every explainer's maps; the figures below "
               f"show the models that have {ex_name} maps (a preset may run it on a sub-grid: the demo runs its "
               "extra explainers on the dense models and the first pruned level of each arm).")
unit = f"{name} ({VALUE_SHORT[value]})"
tag = file_tag(metric, variant, value) + ("" if explainer == "gradcam" else f"_{explainer}")

st.subheader("Do the dense explanations beat chance?")
chance = q(store, "beats_chance", metric, variant, value, 10_000, 0, explainer)
cells = [(a.arm_id, t) for a in arms.itertuples() for t in arm_tasks(a.tasks)]
missing = [c for c in cells if c not in set(zip(chance["arm_id"], chance["task"], strict=True))]
if chance.empty:
    st.info(f"**No comparison with chance on this store for {name}** (`{variant}`): it holds no random-ordering "
            f"score on targets where a dense model's {ex_name} was scored, so whether the explanations beat chance "
            "cannot be told. Precompute stores the random orderings when the preset's orderings include `random` "
            "(the default).")
else:
    n_beat = int(chance["verdict"].isin(BEATS).sum())
    n_clear = int((chance["verdict"] == BEATS[0]).sum())
    no_verdict = f"; {len(missing)} more {'has' if len(missing) == 1 else 'have'} no verdict" if missing else ""
    st.markdown(f"**The dense explanations beat chance for {n_beat} of {len(chance)} model × task cells**"
                + (f" ({n_clear} clearly)" if n_beat else "") + no_verdict + ".")
    for _, r in chance.iterrows():
        alert, icon = VERDICT_STYLE.get(str(r["verdict"]), (st.warning, ":material/help:"))
        alert(chance_line(r, arm_labels.get(r["arm_id"]) or str(r["arm_id"]), unit, derived), icon=icon)
    for arm_id, task in missing:
        st.warning(f"**{dense_name(arm_labels.get(arm_id) or arm_id)}** — {task_label[task]}: no verdict: no "
                   f"target has both a {name} score of {ex_name} at the primary layer and of the random orderings "
                   f"(e.g. every {ex_name} map of this task is all-zero there).", icon=":material/help:")
    chance_def = ("its AbPC (its most- minus its least-relevant-first score; chance is 0)" if derived else
                  f"{ex_name}'s {name} score minus the mean score of the K random orderings")
    st.caption(f"The margin of an image is {chance_def} on the same targets, averaged over the image's targets; "
               "shown is its mean over the images with a 95 % BCa bootstrap interval, a two-sided "
               "Wilcoxon signed-rank test over the images, Holm-adjusted over all the dense cells. *Clearly*: "
               "significant and at least 20 % of the random baseline's score. A pruning comparison below only "
               "means something where the dense model beats chance: elsewhere there is no faithful explanation "
               "for pruning to keep.")
    table = chance.assign(arm=chance["arm_id"].map(arm_labels), task=chance["task"].map(task_label))
    cols = ["arm", "model_id", "task", "layer_label", "verdict", "margin", "ci_low", "ci_high", "margin_share",
            "gradcam", "random", "p", "p_holm", "n_images", "n_targets"]
    st.dataframe(table[cols], hide_index=True, key="ov_chance_table", column_config=margin_columns())
    st.download_button("Download the chance check (CSV)", table[cols].to_csv(index=False).encode(),
                       file_name=f"beats_chance_{tag}.csv", mime="text/csv", key="ov_csv_chance")

fig4 = q(store, "figure4", metric, variant, value, query.N_BOOT, 0, 0.95, explainer)
perf = q(store, "performance")
tasks = arm_tasks(set(fig4["task"]) | set(perf["task"]))
st.subheader(f"{name} and task performance vs sparsity")
c3, c4, c5 = st.columns([1, 1, 2])
x = c3.radio("Sparsity axis", ["target_sparsity", "sparsity"], horizontal=True, key="ov_x",
             format_func=lambda v: {"target_sparsity": "target", "sparsity": "achieved"}[v])
margin = c4.toggle("Margin over chance", key="ov_margin",
                   help="Grad-CAM minus the mean of the random orderings per image (AbPC: its value), with its 95 % "
                        "bootstrap interval; 0 = no better than chance")
baselines = c5.multiselect("Baselines", ["random", "reversed"], default=["random", "reversed"], key="ov_baselines",
                           format_func=SERIES_LABELS.get, disabled=margin)
series = ["margin"] if margin else ["explainer", *baselines]
absent = sorted(set(baselines) - set(fig4["series"])) if not margin else []
orient = "; higher = more faithful" if value == "score_norm" else ""
st.caption(f"Left: mean {name} ({VALUE_SHORT[value]}{orient}) over images of "
           + (f"the margin of {ex_name} over chance (95 % bootstrap interval over images; 0 = chance)" if margin else
              f"{ex_name} (solid, 95 % bootstrap interval over images) and of the baselines (dashed: the mean of the "
              "K random orderings, dotted: the reversed ordering)")
           + ("" if not absent else f"; {name} has no {' or '.join(absent)} series here")
           + ". Right: the task's primary validation metric (pooled over all pixels of the split, so it has no "
             "per-image interval) and the trivial predictor. Click a point to open that model's images in Compare.")

selected = None
y_title = f"{'margin of ' if margin else 'mean '}{name} ({VALUE_SHORT[value]})"
for task in tasks:
    st.markdown(f"**{task_label[task]}**")
    left, right = st.columns(2)
    ft = fig4[fig4["task"] == task]
    fig = figures.faithfulness_vs_sparsity(ft, arm_labels, x, y_title, series, names=SERIES_LABELS)
    event = left.plotly_chart(fig, key=f"ov_faith_{task}", on_select="rerun", selection_mode="points")
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

st.subheader("How far pruning moved the explanations, against how far retraining moves them")
measure = st.radio("Similarity", list(query.SIMILARITY_MEASURES), horizontal=True, key="ov_sim",
                   format_func=SIMILARITY_LABELS.get)
sim = q(store, "similarity_vs_sparsity", measure)
noise = q(store, "seed_noise", measure)
if sim.empty:
    st.info("No pruned model's maps have been compared with their dense model's yet.")
else:
    band = ("Shaded: the 95 % interval of another training seed's dense maps against the first seed's on the same "
            "targets (the noise floor); a pruned model inside it moved its maps no more than retraining does."
            if not noise.empty else "No noise floor on this store: it has one training seed per arm (build it "
            "with `--seeds 2` or more, e.g. the `demo_seeds` preset, to see how far retraining alone moves the maps).")
    st.caption(f"Mean {SIMILARITY_LABELS[measure]} of each pruned model's Grad-CAM maps to its dense model's on the "
               "same targets (per image, mean over its targets; 95 % bootstrap interval over images); open "
               f"markers: the training-budget controls. {band}")
    sim_cols = st.columns(min(3, max(1, sim["task"].nunique())))
    for i, task in enumerate(arm_tasks(set(sim["task"]))):
        col = sim_cols[i % len(sim_cols)]
        col.markdown(f"**{task_label[task]}**")
        col.plotly_chart(similarity_vs_sparsity(sim[sim["task"] == task], noise[noise["task"] == task], arm_labels,
                                                x, SIMILARITY_LABELS[measure]), key=f"ov_sim_{task}")

st.subheader("Does pruning make the tasks' explanations more alike?")
xc1, xc2 = st.columns([3, 1])
xt_measure = xc1.radio("Cross-task similarity", list(query.CROSS_TASK_MEASURES), horizontal=True, key="ov_xt",
                       format_func=SIMILARITY_LABELS.get)
xt_on = xc2.toggle("Compute", value=counts.get("explanations", 0) <= XT_AUTO_MAPS, key="ov_xt_on",
                   help="Reads every primary Grad-CAM map once per store snapshot (on by default for stores of up "
                        f"to {XT_AUTO_MAPS:,} maps; a large store takes minutes the first time).")
xt = q(store, "cross_task_vs_sparsity", xt_measure) if xt_on else None
if xt is None:
    st.caption("Switch on *Compute* to see how alike the tasks' explanations are and how pruning changes it.")
elif xt.empty:
    st.info("No model here has Grad-CAM maps of two or more tasks on the same image: nothing to compare across tasks.")
else:
    st.caption(f"Mean {SIMILARITY_LABELS[xt_measure]} between two tasks' Grad-CAM maps of the same image (a task's "
               "map: the mean of its targets' maps, each min-max normalised) over the images, with its 95 % bootstrap "
               "interval; the dense model at 0, the pruned levels at their achieved sparsity, the control open. "
               "Ringed: the change from the dense model on the same images is significant (Wilcoxon signed-rank, "
               "Holm over the arm's levels, p < 0.05). Rising: the shared encoder drifts towards one saliency for "
               "all tasks.")
    for arm_id, rows in xt.groupby("arm_id", sort=False):
        st.markdown(cross_task_figures.reading(rows, arm_labels.get(arm_id) or str(arm_id),
                                               SIMILARITY_LABELS[xt_measure], task_label))
    pairs = list(dict.fromkeys(zip(xt["task_a"], xt["task_b"], strict=True)))
    xt_cols = st.columns(min(3, len(pairs)))
    for i, (ta, tb) in enumerate(pairs):
        col = xt_cols[i % len(xt_cols)]
        col.markdown(f"**{cross_task_figures.pair_label(ta, tb, task_label)}**")
        col.plotly_chart(cross_task_figures.cross_task_vs_sparsity(
            xt[(xt["task_a"] == ta) & (xt["task_b"] == tb)], arm_labels, SIMILARITY_LABELS[xt_measure]),
            key=f"ov_xt_{ta}_{tb}")

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
table4 = fig4.assign(metric=metric, variant=variant, value=value, arm=fig4["arm_id"].map(arm_labels),
                     task=fig4["task"].map(task_label), series=fig4["series"].map(lambda v: SERIES_LABELS.get(v, v)))
st.dataframe(table4, hide_index=True, height=240, key="ov_fig4_table")
d1, d2, d3 = st.columns(3)
d1.download_button(f"Download {name} aggregates (CSV)", fig4.assign(metric=metric, variant=variant, value=value)
                   .to_csv(index=False).encode(), file_name=f"figure4_{tag}.csv", mime="text/csv", key="ov_csv_fig4")
per_image = q(store, "faithfulness_per_image", metric, variant, value, explainer)
d2.download_button(f"Download per-image {name} (CSV)", per_image.assign(metric=metric, variant=variant, value=value)
                   .to_csv(index=False).encode(), file_name=f"per_image_{tag}.csv", mime="text/csv",
                   key="ov_csv_img")
d3.download_button("Download task performance (CSV)", perf.to_csv(index=False).encode(),
                   file_name="task_performance.csv", mime="text/csv", key="ov_csv_perf")
