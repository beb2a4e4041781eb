"""Plotly figures of the Verdict page (no Streamlit, no data access: DataFrames in, figures out)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

VERDICT_COLOURS = {"lower": "#d62728", "higher": "#2ca02c", "equivalent": "#1f77b4", "inconclusive": "#d9d9d9"}
VERDICT_ORDER = list(VERDICT_COLOURS)


def cell_key(row: Mapping | pd.Series) -> str:
    """The URL-safe id of a cell: ``model_id|task|metric``."""
    return f"{row['model_id']}|{row['task']}|{row['metric']}"


def grid(cells: pd.DataFrame, row_label: Mapping[tuple[str, float], str], selected: str | None = None) -> go.Figure:
    """Rows: arm and level; columns: task and metric; colour: the verdict; text: mean delta (``x``: task metric
    no better than the trivial predictor's). Each cell's ``customdata`` is its :func:`cell_key`."""
    rows = list(dict.fromkeys(zip(cells["arm_id"], cells["level"], strict=True)))
    cols = list(dict.fromkeys(zip(cells["task"], cells["metric"], strict=True)))
    z = np.full((len(rows), len(cols)), np.nan)
    text = np.full(z.shape, "", dtype=object)
    key = np.full(z.shape, "", dtype=object)
    hover = np.full(z.shape, "no data", dtype=object)
    ri, ci = {r: i for i, r in enumerate(rows)}, {c: j for j, c in enumerate(cols)}
    for r in cells.to_dict("records"):
        i, j = ri[(r["arm_id"], r["level"])], ci[(r["task"], r["metric"])]
        z[i, j] = VERDICT_ORDER.index(r["verdict"])
        mark = "× " if r["no_better_than_trivial"] else ""
        text[i, j] = f"{mark}{r['mean_delta']:+.3f}" + (" ◀" if cell_key(r) == selected else "")
        key[i, j] = cell_key(r)
        hover[i, j] = (f"{r['verdict']}<br>mean Δ {r['mean_delta']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
                       f"<br>Holm p {r['p_holm']:.3g} · TOST p {r['p_tost']:.3g}<br>{r['n_images']} images, "
                       f"{r['n_seeds']} seed(s)" + ("<br>task metric no better than trivial" if mark else ""))
    n = len(VERDICT_ORDER)
    scale = [[k / n + e, VERDICT_COLOURS[v]] for k, v in enumerate(VERDICT_ORDER) for e in (0, 1 / n)]
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"{t} · {m}" for t, m in cols], y=[row_label.get(r, f"{r[0]} {r[1]:g}") for r in rows],
        text=text, texttemplate="%{text}", customdata=key, hovertext=hover, hoverinfo="text", zmin=-0.5,
        zmax=n - 0.5, colorscale=scale, showscale=False, xgap=2, ygap=2, textfont={"size": 10}))
    fig.update_layout(height=max(260, 34 * len(rows) + 140), margin={"l": 0, "r": 0, "t": 10, "b": 0})
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(side="top", tickangle=-40)
    return fig


def paired_points(pairs: pd.DataFrame, model: str, reference: str) -> go.Figure:
    """Each image's margin under the reference (left) and the model (right), joined: the paired points."""
    fig = go.Figure()
    per = pairs.groupby("image_id")[["margin_reference", "margin_model", "delta"]].mean().sort_values("delta")
    for img, r in per.iterrows():
        colour = "#d62728" if r["delta"] < 0 else "#2ca02c"
        fig.add_trace(go.Scatter(x=[reference, model], y=[r["margin_reference"], r["margin_model"]],
                                 mode="lines+markers", line={"color": colour, "width": 1}, opacity=0.6,
                                 marker={"size": 5}, showlegend=False,
                                 hovertemplate=f"image {img}<br>Δ {r['delta']:+.4f}<br>%{{x}}: %{{y:.4f}}"
                                               "<extra></extra>"))
    fig.update_layout(height=380, margin={"l": 0, "r": 0, "t": 10, "b": 0}, yaxis_title="margin over chance")
    return fig


def delta_distribution(pairs: pd.DataFrame, row: Mapping) -> go.Figure:
    """The per-image deltas (one point per image; mean over seeds), their mean with its interval, 0 and the
    TOST equivalence band ±delta."""
    d = pairs.groupby("image_id")["delta"].mean().sort_values()
    fig = go.Figure(go.Histogram(x=d.to_numpy(), nbinsx=min(30, max(5, len(d) // 2)), name="images",
                                 marker={"color": "rgba(99,110,250,0.6)"}))
    fig.add_vrect(x0=-row["margin"], x1=row["margin"], fillcolor="rgba(31,119,180,0.12)", line_width=0,
                  annotation_text="±δ (TOST)", annotation_position="top left")
    fig.add_vline(x=0, line={"color": "grey", "dash": "dot"})
    fig.add_vrect(x0=row["ci_low"], x1=row["ci_high"], fillcolor="rgba(0,0,0,0.15)", line_width=0)
    fig.add_vline(x=row["mean_delta"], line={"color": "black"}, annotation_text="mean Δ and 95 % interval")
    fig.update_layout(height=380, margin={"l": 0, "r": 0, "t": 30, "b": 0}, xaxis_title="Δ margin (model − "
                      "reference) per image", yaxis_title="images", showlegend=False)
    return fig


def family(fam: pd.DataFrame, selected_model: str) -> go.Figure:
    """The tests of the cell's family (its arm, task, metric, reference over the levels): mean delta with its
    interval coloured by verdict, the TOST band ±delta per level, Holm-adjusted p in the hover."""
    fam = fam.sort_values("level")
    x = [f"{lv * 100:.4g} %" for lv in fam["level"]]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=x, y=2 * fam["margin"], base=-fam["margin"], marker={"color": "rgba(31,119,180,0.15)"},
                         name="±δ (TOST margin)", hoverinfo="skip"))
    fig.add_trace(go.Scatter(
        x=x, y=fam["mean_delta"], mode="markers", name="mean Δ (95 % interval)",
        marker={"size": [14 if m == selected_model else 9 for m in fam["model_id"]],
                "color": [VERDICT_COLOURS[v] for v in fam["verdict"]], "line": {"color": "black", "width": 1}},
        error_y={"type": "data", "symmetric": False, "array": fam["ci_high"] - fam["mean_delta"],
                 "arrayminus": fam["mean_delta"] - fam["ci_low"]},
        customdata=np.stack([fam["verdict"], fam["p_wilcoxon"], fam["p_holm"], fam["p_tost"]], axis=1),
        hovertemplate="%{x}: %{customdata[0]}<br>mean Δ %{y:+.4f}<br>Wilcoxon p %{customdata[1]:.3g}, Holm "
                      "%{customdata[2]:.3g}<br>TOST p %{customdata[3]:.3g}<extra></extra>"))
    fig.add_hline(y=0, line={"color": "grey", "dash": "dot"})
    fig.update_layout(height=340, margin={"l": 0, "r": 0, "t": 10, "b": 0}, xaxis_title="sparsity (target)",
                      yaxis_title="mean Δ margin", barmode="overlay",
                      legend={"orientation": "h", "y": -0.3})
    return fig


def cost_view(points: pd.DataFrame, axis: str, axis_label: str, metric: str, log_x: bool) -> go.Figure:
    """One task's models: the faithfulness margin (left) and the task metric (right) against a cost ``axis``, one
    colour per arm, dense / control / pruned by marker; ringed: the Pareto front of (task metric, margin, MACs)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12)
    symbols = {"dense": "square", "control": "diamond", "pruned": "circle"}
    palette = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3"]
    for k, (arm, g) in enumerate(points.groupby("arm_id", sort=False)):
        colour = palette[k % len(palette)]
        for col, y in ((1, "mean_margin"), (2, "task_value")):
            fig.add_trace(go.Scatter(
                x=g[axis], y=g[y], mode="markers", name=str(arm), legendgroup=str(arm), showlegend=col == 1,
                marker={"color": colour, "size": 9, "symbol": [symbols.get(r, "circle") for r in g["role"]],
                        "line": {"color": "black", "width": [2 if f else 0 for f in g["front"]]}},
                customdata=np.stack([g["model_id"], g["role"], g["level"]], axis=-1),
                hovertemplate="%{customdata[0]}<br>%{customdata[1]} · %{customdata[2]:.4g}<br>x %{x:.4g}"
                              "<br>y %{y:.4g}<extra></extra>"), row=1, col=col)
    better = "higher" if points.empty or bool(points["higher_is_better"].iloc[0]) else "lower"
    task_metric = "" if points.empty else str(points["task_metric"].iloc[0])
    fig.update_xaxes(title_text=axis_label, type="log" if log_x else "linear")
    fig.update_yaxes(title_text=f"{metric} margin over chance", row=1, col=1)
    fig.update_yaxes(title_text=f"{task_metric} ({better} is better)", row=1, col=2)
    fig.update_layout(height=380, margin={"l": 0, "r": 0, "t": 10, "b": 0})
    return fig
