"""Cross-task similarity vs sparsity: the plotly figure and the plain-words reading per arm (no Streamlit, no data
access; the rows are ``query.cross_task_vs_sparsity``'s)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go

from pages.figures import arm_colours

ALPHA = 0.05


def pair_label(task_a: str, task_b: str, labels: Mapping[str, str]) -> str:
    return f"{labels.get(task_a, task_a)} × {labels.get(task_b, task_b)}"


def _per_x(g: pd.DataFrame) -> pd.DataFrame:
    """One point per sparsity (seeds averaged), ``significant`` when any of its models changed significantly."""
    g = g.assign(significant=g["change"].isin(["more alike", "less alike"]))
    return g.groupby("sparsity", as_index=False).agg(
        mean=("mean", "mean"), ci_low=("ci_low", "mean"), ci_high=("ci_high", "mean"), n_images=("n_images", "sum"),
        model_id=("model_id", "first"), delta=("delta", "mean"), p_holm=("p_holm", "max"),
        significant=("significant", "any")).sort_values("sparsity")


def cross_task_vs_sparsity(df: pd.DataFrame, arm_labels: Mapping[str, str], y_title: str,
                           height: int = 320) -> go.Figure:
    """One task pair: per arm, the mean cross-task similarity of the dense model (at 0) and the pruned levels
    (a line; x = achieved sparsity), the control as an open marker; 95 % bootstrap intervals over images. A level
    whose change from the dense model is significant (Holm-adjusted Wilcoxon p < 0.05) has a black ring."""
    fig = go.Figure()
    colours = arm_colours(list(arm_labels) or list(dict.fromkeys(df["arm_id"])))
    for arm, g in df.groupby("arm_id", sort=False):
        colour, label = colours.get(arm, "grey"), arm_labels.get(arm, arm)
        for role, symbol in (("line", "circle"), ("control", "circle-open")):
            s = _per_x(g[g["role"].isin(["dense", "pruned"]) if role == "line" else g["role"] == "control"])
            if s.empty:
                continue
            fig.add_trace(go.Scatter(
                x=s["sparsity"] * 100, y=s["mean"], mode="lines+markers" if role == "line" else "markers",
                name=f"{label}{' · control' if role == 'control' else ''}", line={"color": colour},
                marker={"symbol": symbol, "size": [11 if v else 7 for v in s["significant"]],
                        "line": {"color": ["black" if v else colour for v in s["significant"]], "width": 2}},
                customdata=s[["model_id", "ci_low", "ci_high", "n_images", "delta", "p_holm"]].to_numpy(),
                error_y={"type": "data", "symmetric": False, "array": s["ci_high"] - s["mean"],
                         "arrayminus": s["mean"] - s["ci_low"]},
                hovertemplate="%{customdata[0]}<br>sparsity %{x:.1f} %<br>mean %{y:.3f} [%{customdata[1]:.3f}, "
                              "%{customdata[2]:.3f}]<br>change from dense %{customdata[4]:+.3f} (Holm p "
                              "%{customdata[5]:.2g})<br>%{customdata[3]} images<extra></extra>"))
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 10, "b": 0}, xaxis_title="achieved sparsity (%)",
                      yaxis_title=y_title, legend={"orientation": "h", "y": -0.25, "font": {"size": 10}})
    return fig


def _step(r: pd.Series, labels: Mapping[str, str]) -> str:
    return (f"{pair_label(r['task_a'], r['task_b'], labels)} at {r['sparsity'] * 100:.0f} % "
            f"({r['dense_mean']:.2f} → {r['mean']:.2f}, Holm p = {r['p_holm']:.2g})")


def reading(rows: pd.DataFrame, arm_label: str, measure_label: str, labels: Mapping[str, str]) -> str:
    """One sentence on one arm's rows: does pruning make the tasks' explanations more alike, less alike, or
    neither (Holm-adjusted Wilcoxon p < 0.05 over images), with the largest significant change and the control."""
    dense = rows[(rows["role"] == "dense") & rows["mean"].notna()]
    pruned = rows[(rows["role"] == "pruned") & rows["p_holm"].notna()]
    control = rows[(rows["role"] == "control") & rows["change"].isin(["more alike", "less alike"])]
    if pruned.empty:
        values = "; ".join(f"{pair_label(r.task_a, r.task_b, labels)} {r.mean:.2f}" for r in dense.itertuples())
        dense_part = (f"the dense model's mean {measure_label} between its tasks' maps: {values}" if values else
                      "a task's maps are all zero on every image, so its maps cannot be compared with the others'")
        why = ("no pruned level has enough images with comparable maps to test a change" if
               (rows["role"] == "pruned").any() else "no pruned model to compare yet")
        return f"**{arm_label}**: {why}; {dense_part}."
    up, down = pruned[pruned["change"] == "more alike"], pruned[pruned["change"] == "less alike"]
    n = f"{len(pruned)} pruned level × task pair comparison{'s' if len(pruned) != 1 else ''}"
    if up.empty and down.empty:
        text = (f"pruning does not measurably change how alike the tasks' explanations are (no significant change "
                f"in {n}, Holm-adjusted p ≥ {ALPHA})")
    elif down.empty or up.empty:
        side = up if down.empty else down
        word = "more alike (the tasks' maps converge towards one saliency)" if down.empty else "less alike"
        big = side.loc[side["delta"].abs().idxmax()]
        text = f"pruning makes the tasks' explanations {word} in {len(side)} of {n}; largest: {_step(big, labels)}"
    else:
        text = (f"mixed: the tasks' explanations become more alike in {len(up)} and less alike in {len(down)} of {n} "
                f"(largest rise: {_step(up.loc[up['delta'].idxmax()], labels)}; largest fall: "
                f"{_step(down.loc[down['delta'].idxmin()], labels)})")
    if not control.empty:
        text += (f"; the training-budget control changes it too ({len(control)} task pair"
                 f"{'s' if len(control) != 1 else ''}), so retraining alone may account for part of it")
    return f"**{arm_label}**: {text}."
