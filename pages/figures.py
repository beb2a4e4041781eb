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
ORDER_DASH = {"morf": "solid", "lerf": "dot", "random": "dash"}
ORDER_NAMES = {"morf": "most relevant first", "lerf": "least relevant first", "random": "random ordering"}
ORDER_COLOUR = {"morf": "#636efa", "lerf": "#636efa", "random": "rgba(120,120,120,0.7)"}
SERIES_DASH = {"explainer": "solid", "margin": "solid", "random": "dash", "reversed": "dot"}


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


def prediction(display: str, pred: np.ndarray, classes: Sequence[str], title: str, height: int = 220,
               quantity: str = "value") -> go.Figure:
    """A model's clean prediction as its task's ``display`` kind draws it (``query.task_info``): ``labels`` a class
    map, ``scalar`` a heatmap of ``quantity``, ``rgb`` a 3-channel field in [-1, 1] (or [0, 1]) as colours."""
    pred = np.asarray(pred)
    if display == "labels":
        n = len(classes)
        scale = [[v, CLASS_PALETTE[i % len(CLASS_PALETTE)]] for i in range(n) for v in (i / n, (i + 1) / n)]
        names = np.asarray(classes, dtype=object)[np.clip(pred.astype(int), 0, n - 1)]
        fig = go.Figure(go.Heatmap(z=pred.astype(float) + 0.5, zmin=0, zmax=n, colorscale=scale, showscale=False,
                                   customdata=names, hovertemplate="%{customdata}<extra></extra>"))
        fig.update_yaxes(autorange="reversed")
    elif display == "rgb":
        rgb = np.moveaxis(pred.astype(np.float32), 0, -1) if pred.shape[0] == 3 else pred.astype(np.float32)
        if rgb.min() < 0:
            rgb = (rgb + 1.0) / 2.0
        fig = go.Figure(go.Image(z=to_uint8(np.clip(rgb, 0, 1)), hoverinfo="skip"))
    else:
        z = pred.astype(np.float32)
        fig = go.Figure(go.Heatmap(z=z[0] if z.ndim == 3 else z, colorscale="Viridis", showscale=False,
                                   hovertemplate=f"{quantity} %{{z:.3f}}<extra></extra>"))
        fig.update_yaxes(autorange="reversed")
    return _image_layout(fig, title, height)


def difference(diff: np.ndarray, title: str, height: int = 220) -> go.Figure:
    """Pruned minus dense map: red where the pruned model attributes more, blue where less."""
    fig = go.Figure(go.Heatmap(z=diff, zmin=-1, zmax=1, colorscale="RdBu_r", showscale=False,
                               hovertemplate="pruned - dense %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return _image_layout(fig, title, height)


def irof_curves(curves: pd.DataFrame, labels: Mapping[str, str], colours: Mapping[str, str],
                height: int = 380) -> go.Figure:
    """The Live page's IROF curves (``live.irof_target``): colour = model, line style = the explainer's map
    (solid) / random (dash) / reversed (dot)."""
    fig = go.Figure()
    for r in curves.itertuples():
        if len(r.curve) == 0:
            continue
        name = f"{labels.get(r.model_id, r.model_id)} · {r.saliency_method} (AOC {r.aoc:.2f})"
        fig.add_trace(go.Scatter(x=np.arange(1, len(r.curve) + 1), y=r.curve, mode="lines", name=name,
                                 line={"color": colours.get(r.model_id), "dash": DASH.get(r.saliency_method, "solid"),
                                           "width": 1.5 if r.saliency_method in ("random", "reversed") else 2.5}))
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 10, "b": 0}, xaxis_title="segments removed",
                      yaxis_title="score / clean score", legend={"font": {"size": 11}})
    return fig


def arm_colours(arm_ids: Sequence[str]) -> dict[str, str]:
    """One colour per arm, the same in every figure."""
    return {a: PALETTE[i % len(PALETTE)] for i, a in enumerate(arm_ids)}


def faithfulness_vs_sparsity(df: pd.DataFrame, arm_labels: Mapping[str, str], x: str, y_title: str,
                             series: Sequence[str], names: Mapping[str, str] | None = None,
                             height: int = 360) -> go.Figure:
    """Figure 4 (left): per arm, the mean over images of each of ``series`` (``query.figure4``'s ``explainer``,
    ``random``, ``reversed``, ``margin``) vs sparsity; the first series (explainer or margin) solid with its 95 %
    bootstrap interval, the baselines dashed / dotted and lighter (their interval in the hover); ``names``: the
    series' legend names."""
    fig = go.Figure()
    names = names or {}
    colours = arm_colours(list(arm_labels))
    for arm, g in df.groupby("arm_id", sort=False):
        colour = colours.get(arm, "grey")
        for i, name in enumerate(series):
            s = g[g["series"] == name].sort_values(x)
            if s.empty:
                continue
            main = i == 0
            label = names.get(name, name)
            fig.add_trace(go.Scatter(
                x=s[x] * 100, y=s["mean"], mode="lines+markers", name=f"{arm_labels.get(arm, arm)} · {label}",
                line={"color": colour, "dash": SERIES_DASH.get(name, "solid"), "width": 2.5 if main else 1.5},
                customdata=s[["model_id", "ci_low", "ci_high", "n_images"]].to_numpy(),
                error_y={"type": "data", "symmetric": False, "array": s["ci_high"] - s["mean"],
                         "arrayminus": s["mean"] - s["ci_low"], "visible": main},
                opacity=1.0 if main else 0.55,
                hovertemplate=f"%{{customdata[0]}} · {label}<br>sparsity %{{x:.1f}} %<br>mean %{{y:.4g}} "
                              "[%{customdata[1]:.4g}, %{customdata[2]:.4g}]<br>%{customdata[3]} images<extra></extra>"))
    if series and series[0] == "margin":
        fig.add_hline(y=0, line={"color": "grey", "dash": "dash", "width": 1})
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


def rgba(colour: str, alpha: float) -> str:
    """A plotly colour (``#rrggbb`` or ``rgb(...)``) with transparency."""
    if colour.startswith("#") and len(colour) == 7:
        r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
        return f"rgba({r},{g},{b},{alpha})"
    if colour.startswith("rgb(") and colour.endswith(")"):
        return f"rgba({colour[4:-1]},{alpha})"
    return colour


def random_mean(curves: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Mean curve and mean ``x`` of the random orderings of one model (replicates of equal length only)."""
    rnd = [(np.asarray(r.x, float), np.asarray(r.curve, float)) for r in curves.itertuples()
           if r.ordering == "random" and r.status == "ok" and r.curve is not None and len(r.curve)]
    if not rnd:
        return None
    n = min(len(c) for _, c in rnd)
    return (np.mean([x[:n] for x, _ in rnd], axis=0), np.mean([c[:n] for _, c in rnd], axis=0), len(rnd))


def _ok_curve(r: object) -> bool:
    return getattr(r, "status", None) == "ok" and getattr(r, "curve", None) is not None and len(r.curve) > 0  # type: ignore[attr-defined]


def perturbation_curves(curves: pd.DataFrame, labels: Mapping[str, str], colours: Mapping[str, str],
                        value: str = "score", height: int = 400) -> go.Figure:
    """Curves of one target (``query.faithfulness_curves``) over the share of the image perturbed: per model
    (colour) the most-relevant-first curve (solid) and the least-relevant-first one (dotted) with the area
    between them shaded, and the mean of the random orderings (dashed, lighter)."""
    fig = go.Figure()
    for m, g in curves.groupby("model_id", sort=False):
        colour, name = colours.get(m, "grey"), labels.get(m, m)
        by = {r.ordering: r for r in g.itertuples() if r.ordering != "random" and _ok_curve(r)}
        for o in ("lerf", "morf"):  # lerf first: morf's fill='tonexty' shades the area down / up to it
            r = by.get(o)
            if r is None:
                continue
            shade = o == "morf" and "lerf" in by
            what = f"{name} · {ORDER_NAMES[o]}"
            fig.add_trace(go.Scatter(
                x=np.asarray(r.x), y=np.asarray(r.curve), mode="lines+markers",
                name=f"{what} ({'normalised' if value == 'score_norm' else 'score'} {getattr(r, value):.3g})",
                line={"color": colour, "dash": ORDER_DASH[o], "width": 2.5 if o == "morf" else 1.5},
                marker={"size": 4}, fill="tonexty" if shade else None, fillcolor=rgba(colour, 0.18) if shade else None,
                legendgroup=str(m), hovertemplate=f"{what}<br>" "perturbed %{x:.1%}<br>score / clean %{y:.4f}"
                                                   "<extra></extra>"))
        rnd = random_mean(g)
        if rnd is not None:
            x, y, k = rnd
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"{name} · random (mean of {k})",
                                     line={"color": rgba(colour, 0.5), "dash": "dash", "width": 1.5},
                                     legendgroup=str(m), hovertemplate=f"{name} · random<br>" "perturbed %{x:.1%}"
                                                                       "<br>score / clean %{y:.4f}<extra></extra>"))
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 10, "b": 0}, xaxis_title="share of the image "
                      "perturbed", yaxis_title="score / clean score",
                      legend={"font": {"size": 11}, "orientation": "h", "y": -0.2, "traceorder": "normal"})
    fig.update_xaxes(tickformat=".0%")
    return fig


def step_map(steps: np.ndarray, n_steps: int, k: int, title: str, labels: np.ndarray | None = None,
             height: int = 300) -> go.Figure:
    """Pixels coloured by the step at which they are perturbed (1 = first; never: blank); those perturbed
    after ``k`` steps tinted red; SLIC boundaries optional."""
    z = np.where(steps < n_steps, steps + 1, np.nan).astype(np.float32)
    fig = go.Figure(go.Heatmap(z=z, colorscale="Viridis_r", colorbar={"title": "step", "thickness": 10},
                               hovertemplate="perturbed at step %{z}<extra></extra>"))
    if labels is not None:
        fig.add_trace(boundary_trace(labels, "#ffffff"))
    if k > 0:
        done = np.where(steps < k, 1.0, np.nan)
        fig.add_trace(go.Heatmap(z=done, colorscale=[[0, "rgba(255,0,0,0.35)"], [1, "rgba(255,0,0,0.35)"]],
                                 showscale=False, hoverinfo="skip"))
    fig.update_yaxes(autorange="reversed")
    return _image_layout(fig, title, height)


def curve_position(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], point: tuple[float, float],
                   names: Mapping[str, str], height: int = 300) -> go.Figure:
    """Curves ``{ordering: (x, curve)}`` of one target (``morf``, ``lerf``, ``random``: the mean of K) over the
    share perturbed, the area between ``morf`` and ``lerf`` shaded, and the shown step ``point`` marked."""
    fig = go.Figure()
    for o in sorted(curves, key=lambda o: ("lerf", "morf").index(o) if o in ("lerf", "morf") else 2):
        x, y = curves[o]
        shade = o == "morf" and "lerf" in curves
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=names.get(o, o), fill="tonexty" if shade else None,
                                 fillcolor="rgba(99,110,250,0.18)" if shade else None,
                                 line={"dash": ORDER_DASH.get(o, "solid"), "color": ORDER_COLOUR.get(o)}))
    fig.add_trace(go.Scatter(x=[point[0]], y=[point[1]], mode="markers", marker={"size": 12, "color": "red"},
                             name="shown step"))
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 10, "b": 0}, xaxis_title="share perturbed",
                      yaxis_title="score / clean score", legend={"orientation": "h", "y": -0.3, "traceorder": "normal"})
    fig.update_xaxes(tickformat=".0%")
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
