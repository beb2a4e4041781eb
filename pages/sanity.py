"""Sanity: do the explanations depend on the model, the target and the task's head? The sanity checks of every
dense model's explanations (issue 21), per explainer: which pass, the randomisation curves, the head table, the
random-target and noise-floor numbers."""

from __future__ import annotations

import json

import pandas as pd
import plotly.express as px
import streamlit as st

from pages.common import keep_in_url, q, store_or_stop, task_labels

CHECK_LABELS = {"model_randomisation": "model randomisation", "head_randomisation": "head randomisation",
                "random_target": "random target", "noise_floor": "noise floor"}
EXPLAINER_LABELS = {"gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "hirescam": "HiResCAM",
                    "xgradcam": "XGrad-CAM", "layercam": "LayerCAM", "scorecam": "Score-CAM",
                    "integrated_gradients": "Integrated Gradients"}


def name(explainer: str) -> str:
    return EXPLAINER_LABELS.get(explainer, explainer)


def model_label(row: pd.Series) -> str:
    seed = f" · seed {row['seed']}" if pd.notna(row["seed"]) else ""
    return f"{row['arm'] if pd.notna(row['arm']) else row['model_id']}{seed} (dense)"


def summary_lines(summary: pd.DataFrame, labels: dict[str, str]) -> list[str]:
    """One sentence per explainer: on which dense models it passes every check, and what fails where."""
    lines = []
    for explainer, df in summary.groupby("explainer", sort=False):
        per_model = df.groupby("model_id", sort=False)["passed"].all()
        good = [labels[m] for m, ok in per_model.items() if ok]
        bad = df[~df["passed"].astype(bool)]
        text = f"**{name(str(explainer))}** passes every check on {len(good)} of {len(per_model)} dense models"
        text += f" ({', '.join(good)})" if good else ""
        if not bad.empty:
            fails = "; ".join(f"{CHECK_LABELS[r.check_name]} on {labels[r.model_id]} ({r.n_passed} of {r.n} passed)"
                              for r in bad.itertuples())
            text += f"; fails {fails}"
        lines.append(text + ".")
    return lines


st.title("Sanity checks: do the explanations depend on the model?")
store = store_or_stop()
task_label = task_labels(store)
summary = q(store, "sanity_summary")
if summary.empty:
    st.info("The store has no sanity checks yet: precompute runs them on every dense model after explaining it "
            "(`sanity` on in the preset).")
    st.stop()

labels = {r["model_id"]: model_label(r) for _, r in summary.drop_duplicates("model_id").iterrows()}
st.subheader("Which explainers pass the checks on which models")
for line in summary_lines(summary, labels):
    st.markdown(f"- {line}")
st.caption("Model randomisation (Adebayo et al. 2018): the model's layers re-initialised from the task's head "
           "towards the input; the maps must change (every step's mean Spearman below the threshold). Head "
           "randomisation: one task's head re-initialised; that task's maps must change, the other tasks' must not. "
           "Random target: a target's map against another target's map of the same image; they must differ.")
grid = summary.assign(model=summary["model_id"].map(labels), explainer=summary["explainer"].map(name),
                      check=summary["check_name"].map(CHECK_LABELS),
                      result=[f"{'✓' if p else '✗'} {a}/{b}" for p, a, b in
                              zip(summary["passed"], summary["n_passed"], summary["n"], strict=True)])
st.dataframe(grid.pivot_table(index=["model", "explainer"], columns="check", values="result", aggfunc="first",
                              sort=False), key="sn_grid")

keep_in_url(["sn_model", "sn_explainer"])
left, right = st.columns(2)
model_ids = list(labels)
if st.session_state.get("sn_model") not in model_ids:
    st.session_state.pop("sn_model", None)
model_id = left.selectbox("Dense model", model_ids, format_func=labels.__getitem__, key="sn_model")
explainers = list(dict.fromkeys(summary.loc[summary["model_id"] == model_id, "explainer"]))
if st.session_state.get("sn_explainer") not in explainers:
    st.session_state.pop("sn_explainer", None)
explainer = right.selectbox("Explainer", explainers, format_func=name, key="sn_explainer")
row = summary[summary["model_id"] == model_id].iloc[0]
arch = str(row["arch"] or "")

st.subheader("Model randomisation: similarity to the original maps per cascade step")
curve = q(store, "sanity_randomisation", model_id, explainer)
if curve.empty:
    st.info("No model randomisation rows for this model and explainer.")
else:
    long = curve.melt(id_vars=["task", "step", "label"], value_vars=["spearman", "ssim"], var_name="measure",
                      value_name="similarity")
    long["task"] = long["task"].map(lambda t: task_label.get(t, t))
    fig = px.line(long, x="step", y="similarity", color="task", facet_col="measure", markers=True,
                  hover_data=["label"], labels={"step": "cascade step (head first)"})
    threshold = float(json.loads(curve["settings"].iloc[0])["threshold"])
    fig.add_hline(y=threshold, line_dash="dot", annotation_text="pass threshold (Spearman)", col=1)
    st.plotly_chart(fig, key="sn_curve")
    verdicts = curve.groupby("task", sort=False).agg(passed=("passed", "first"), reason=("reason", "first"),
                                                     emprt=("emprt", "last"), maps=("n_maps", "first"),
                                                     all_zero=("n_zero", "first"))
    st.dataframe(verdicts, key="sn_verdicts",
                 column_config={"emprt": st.column_config.NumberColumn(
                     "eMPRT", format="%.3f", help="relative rise of the maps' entropy from the original to the "
                     "fully randomised model (Hedström et al. 2023); higher = the maps depend more on the model")})

st.subheader("Head randomisation: one task's head re-initialised")
heads = q(store, "sanity_heads", model_id, explainer)
kind = ("an MTAN (each task's attention over a shared trunk)" if "mtan" in arch.lower()
        else "a hard-shared model (one trunk, one head per task)")
st.markdown(f"This is {kind}. Re-initialising task A's head must change task A's maps. In a hard-shared model "
            "the other tasks' maps must not change at all (bit-identical): their path does not run through A's "
            "head. In an MTAN the other tasks' maps should also barely change: each task reads the shared trunk "
            "through its own attention, and A's head feeds no other task.")
if heads.empty:
    st.info("No head randomisation rows (the model has no `heads.<task>` modules).")
else:
    st.dataframe(heads.assign(head_task=heads["head_task"].map(lambda t: task_label.get(t, t)),
                              task=heads["task"].map(lambda t: task_label.get(t, t))),
                 key="sn_heads", column_config={"head_task": "head re-initialised", "task": "maps of"})

st.subheader("Random target and noise floor")
ref = q(store, "sanity_reference", model_id, explainer)
if ref.empty:
    st.info("No random-target or noise-floor rows.")
else:
    for task, df in ref.groupby("task", sort=False):
        cols = st.columns(len(df))
        for col, r in zip(cols, df.itertuples(), strict=True):
            col.metric(f"{task_label.get(str(task), task)} · {CHECK_LABELS[r.check_name]} · Spearman",
                       f"{r.spearman:.3f}" if pd.notna(r.spearman) else "n/a",
                       help=str(r.reason))
    st.caption("Random target: the mean Spearman of each map with another target's map of the same image (low = "
               "the map depends on the target). Noise floor: the maps under small input noise against the clean "
               "maps (how much a map changes anyway; a dense-vs-pruned similarity near it is not a change made "
               "by pruning).")
