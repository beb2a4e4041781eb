"""Plotly figures of the pages (no Streamlit here, no data access: arrays and DataFrames in, figures out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from skimage.segmentation import find_boundaries

PALETTE = px.colors.qualitative.Plotly
CLASS_PALETTE = px.colors.qualitative.Dark24
DASH = {"gradcam": "solid", "random": "dash", "reversed": "dot"}


def fit_height(shape: Sequence[int], columns: int, page_width: int = 950, lo: int = 140, hi: int = 460) -> int:
    """Figure height that fits an image of ``shape`` (H, W, ...) in one of ``columns`` equal columns."""
    return int(min(hi, max(lo, page_width / max(1, columns) * shape[0] / shape[1]))) + 30


def _image_layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(title={"text": title, "font": {"size": 13}}, height=height,
                      margin={"l": 0, "r": 0, "t": 28, "b": 0},
                      showlegend=False)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    return fig


def to_uint8(image: np.ndarray) -> np.ndarray:
    return image if image.dtype == np.uint8 else np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def boundary_trace(labels: np.ndarray, colour: str = "#ffe600") -> go.Heatmap:
    edge = find_boundaries(labels, mode="inner").astype(np.float32)
    edge[edge == 0] = np.nan
    return go.Heatmap(z=edge, colorscale=[[0, colour], [1, colour]], showscale=False, hoverinfo="skip")


def picture(image: np.ndarray, title: str, height: int = 260) -> go.Figure:
    """An RGB image (uint8 or float in [0, 1])."""
    return _image_layout(go.Figure(go.Image(z=to_uint8(image), hoverinfo="skip")), title, height)


def overlay(image: np.ndarray, saliency: np.ndarray, title: str, labels: np.ndarray | None = None,
            opacity: float = 0.55, height: int = 260) -> go.Figure:
    """Grad-CAM map (jet, [0, 1]) over the image, SLIC boundaries optional."""
    fig = go.Figure(go.Image(z=to_uint8(image), hoverinfo="skip"))
    fig.add_trace(go.Heatmap(z=saliency, zmin=0, zmax=1, colorscale="Jet", opacity=opacity, showscale=False,
                             hovertemplate="x %{x}, y %{y}<br>saliency %{z:.3f}<extra></extra>"))
    if labels is not None:
        fig.add_trace(boundary_trace(labels))
    return _image_layout(fig, title, height)


def prediction(task: str, pred: np.ndarray, classes: Sequence[str], title: str, height: int = 220) -> go.Figure:
    """A model's clean prediction: class map, depth map or normals as RGB."""
    pred = np.asarray(pred)
    if task == "segmentation":
        n = len(classes)
        scale = [[v, CLASS_PALETTE[i % len(CLASS_PALETTE)]] for i in range(n) for v in (i / n, (i + 1) / n)]
        names = np.asarray(classes, dtype=object)[np.clip(pred.astype(int), 0, n - 1)]
        fig = go.Figure(go.Heatmap(z=pred.astype(float) + 0.5, zmin=0, zmax=n, colorscale=scale, showscale=False,
                                   customdata=names, hovertemplate="%{customdata}<extra></extra>"))
        fig.update_yaxes(autorange="reversed")
    elif task == "depth":
        fig = go.Figure(go.Heatmap(z=pred.astype(np.float32), colorscale="Viridis", showscale=False,
                                   hovertemplate="depth %{z:.3f}<extra></extra>"))
        fig.update_yaxes(autorange="reversed")
    else:
        rgb = np.moveaxis(pred.astype(np.float32), 0, -1) if pred.shape[0] == 3 else pred.astype(np.float32)
        if rgb.min() < 0:
            rgb = (rgb + 1.0) / 2.0
        fig = go.Figure(go.Image(z=to_uint8(np.clip(rgb, 0, 1)), hoverinfo="skip"))
    return _image_layout(fig, title, height)


def difference(diff: np.ndarray, title: str, height: int = 220) -> go.Figure:
    """Pruned minus dense map: red where the pruned model attributes more, blue where less."""
    fig = go.Figure(go.Heatmap(z=diff, zmin=-1, zmax=1, colorscale="RdBu_r", showscale=False,
                               hovertemplate="pruned - dense %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return _image_layout(fig, title, height)


def irof_curves(curves: pd.DataFrame, labels: Mapping[str, str], colours: Mapping[str, str],
                height: int = 380) -> go.Figure:
    """IROF curves: colour = model, line style = Grad-CAM (solid) / random (dash) / reversed (dot)."""
    fig = go.Figure()
    for r in curves.itertuples():
        if len(r.curve) == 0:
            continue
        name = f"{labels.get(r.model_id, r.model_id)} · {r.saliency_method} (AOC {r.aoc:.2f})"
        fig.add_trace(go.Scatter(x=np.arange(1, len(r.curve) + 1), y=r.curve, mode="lines", name=name,
                                 line={"color": colours.get(r.model_id), "dash": DASH.get(r.saliency_method, "solid"),
                                           "width": 2.5 if r.saliency_method == "gradcam" else 1.5}))
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 10, "b": 0}, xaxis_title="segments removed",
                      yaxis_title="score / clean score", legend={"font": {"size": 11}})
    return fig


def arm_colours(arm_ids: Sequence[str]) -> dict[str, str]:
    """One colour per arm, the same in every figure."""
    return {a: PALETTE[i % len(PALETTE)] for i, a in enumerate(arm_ids)}


def aoc_vs_sparsity(df: pd.DataFrame, arm_labels: Mapping[str, str], x: str, y_title: str,
                    baselines: Sequence[str], height: int = 360) -> go.Figure:
    """Figure 4 (left): mean AOC per arm and sparsity with 95 % bootstrap intervals; baselines dashed."""
    fig = go.Figure()
    colours = arm_colours(list(arm_labels))
    for arm, g in df.groupby("arm_id", sort=False):
        colour = colours.get(arm, "grey")
        for method in ("gradcam", *baselines):
            s = g[g["saliency_method"] == method].sort_values(x)
            if s.empty:
                continue
            fig.add_trace(go.Scatter(
                x=s[x] * 100, y=s["mean"], mode="lines+markers", name=f"{arm_labels.get(arm, arm)} · {method}",
                line={"color": colour, "dash": DASH.get(method, "solid")}, customdata=s[["model_id"]].to_numpy(),
                error_y={"type": "data", "symmetric": False, "array": s["ci_high"] - s["mean"],
                             "arrayminus": s["mean"] - s["ci_low"], "visible": method == "gradcam"},
                opacity=1.0 if method == "gradcam" else 0.6,
                hovertemplate="%{customdata[0]}<br>sparsity %{x:.1f} %<br>mean AOC %{y:.3f}<extra></extra>"))
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 10, "b": 0}, xaxis_title="sparsity (%)",
                      yaxis_title=y_title, legend={"orientation": "h", "y": -0.25, "font": {"size": 10}})
    return fig


def performance_vs_sparsity(df: pd.DataFrame, arm_labels: Mapping[str, str], x: str, metric: str,
                            height: int = 360) -> go.Figure:
    """Figure 4 (right): the task's primary metric per arm and sparsity; the trivial predictor dotted."""
    fig = go.Figure()
    colours = arm_colours(list(arm_labels))
    for arm, g in df.groupby("arm_id", sort=False):
        colour = colours.get(arm, "grey")
        g = g.sort_values(x)
        fig.add_trace(go.Scatter(x=g[x] * 100, y=g["value"], mode="lines+markers", name=arm_labels.get(arm, arm),
                                 line={"color": colour}, customdata=g[["model_id"]].to_numpy(),
                                 hovertemplate="%{customdata[0]}<br>sparsity %{x:.1f} %<br>"
                                               f"{metric} " "%{y:.4f}<extra></extra>"))
        if g["trivial"].notna().any():
            fig.add_hline(y=float(g["trivial"].dropna().iloc[0]), line={"color": colour, "dash": "dot", "width": 1},
                          annotation_text="trivial predictor", annotation_font_size=10)
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 10, "b": 0}, xaxis_title="sparsity (%)",
                      yaxis_title=metric, legend={"orientation": "h", "y": -0.25, "font": {"size": 10}})
    return fig


def removal_ranks(ranks: np.ndarray, labels: np.ndarray, k: int, title: str, height: int = 300) -> go.Figure:
    """Segments coloured by removal step (1 = first); segments removed by step ``k`` outlined in white."""
    fig = go.Figure(go.Heatmap(z=ranks, colorscale="Viridis_r", colorbar={"title": "step", "thickness": 10},
                               hovertemplate="removed at step %{z}<extra></extra>"))
    fig.add_trace(boundary_trace(labels, "#ffffff"))
    if k > 0:
        removed = np.where(ranks <= k, 1.0, np.nan)
        fig.add_trace(go.Heatmap(z=removed, colorscale=[[0, "rgba(255,0,0,0.35)"], [1, "rgba(255,0,0,0.35)"]],
                                 showscale=False, hoverinfo="skip"))
    fig.update_yaxes(autorange="reversed")
    fig = _image_layout(fig, title, height)
    fig.update_layout(showlegend=False)
    return fig


def curve_position(curves: Mapping[str, np.ndarray], k: int, height: int = 300) -> go.Figure:
    """The curves of one explanation and its baselines with the current step marked."""
    fig = go.Figure()
    for method, curve in curves.items():
        if len(curve) == 0:
            continue
        xs = np.arange(0, len(curve) + 1)
        fig.add_trace(go.Scatter(x=xs, y=np.r_[1.0, curve], mode="lines", name=method,
                                 line={"dash": DASH.get(method, "solid")}))
    main = next(iter(curves.values()))
    if len(main):
        y = 1.0 if k == 0 else float(main[k - 1])
        fig.add_trace(go.Scatter(x=[k], y=[y], mode="markers", marker={"size": 12, "color": "red"}, name=f"step {k}"))
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 10, "b": 0}, xaxis_title="segments removed",
                      yaxis_title="score / clean score", legend={"orientation": "h", "y": -0.3})
    return fig


def margin_by_layer(df: pd.DataFrame, layers: Sequence[str], names: Mapping[str, str], models: Sequence[str],
                    model_labels: Mapping[str, str], dense_id: str, y_title: str, alpha: float = 0.05,
                    height: int = 380) -> go.Figure:
    """Layer ablation of one task: margin over the random ordering (95 % interval) per layer, one trace per model.

    ``layers`` gives the x order (primary first) and ``names`` their tick labels; the models are spread a little
    around each tick so their intervals do not overlap; filled markers: Holm-adjusted p < ``alpha``; the dense
    model is black and larger."""
    fig = go.Figure()
    pos = {lay: i for i, lay in enumerate(layers)}
    width = 0.5 / max(1, len(models))
    for j, m in enumerate(models):
        g = df[(df["model_id"] == m) & df["layer_label"].isin(list(pos))]
        if g.empty:
            continue
        g = g.assign(x=g["layer_label"].map(pos) + (j - (len(models) - 1) / 2) * width).sort_values("x")
        dense = m == dense_id
        colour = "#111111" if dense else PALETTE[j % len(PALETTE)]
        significant = g["p_holm"] < alpha
        fig.add_trace(go.Scatter(
            x=g["x"], y=g["margin"], mode="markers", name=model_labels.get(m, m),
            marker={"color": colour, "size": 12 if dense else 9, "line": {"color": colour, "width": 2},
                    "symbol": ["circle" if s else "circle-open" for s in significant]},
            error_y={"type": "data", "symmetric": False, "array": g["ci_high"] - g["margin"],
                     "arrayminus": g["margin"] - g["ci_low"], "color": colour, "thickness": 2 if dense else 1.2},
            customdata=g[["layer_label", "ci_low", "ci_high", "p_holm", "n_images"]].to_numpy(),
            hovertemplate=f"{model_labels.get(m, m)} · " "%{customdata[0]}<br>margin %{y:.4g} "
                          "[%{customdata[1]:.4g}, %{customdata[2]:.4g}]<br>Holm p %{customdata[3]:.2g} · "
                          "%{customdata[4]} images<extra></extra>"))
    fig.add_hline(y=0, line={"color": "grey", "dash": "dash", "width": 1})
    fig.update_xaxes(tickvals=list(range(len(layers))), ticktext=[names.get(lay, lay) for lay in layers],
                     range=[-0.5, len(layers) - 0.5], title="Grad-CAM layer")
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 10, "b": 0}, yaxis_title=y_title,
                      legend={"orientation": "h", "y": -0.3, "font": {"size": 11}})
    return fig
