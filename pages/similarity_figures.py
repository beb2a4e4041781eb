"""Plotly figure of map similarity vs sparsity with the seeds' noise band (no Streamlit, no data access)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go

from pages.figures import arm_colours


def _rgba(colour: str, alpha: float) -> str:
    colour = colour.lstrip("#")
    if len(colour) != 6:
        return f"rgba(128,128,128,{alpha})"
    r, g, b = (int(colour[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def similarity_vs_sparsity(df: pd.DataFrame, noise: pd.DataFrame, arm_labels: Mapping[str, str], x: str,
                           y_title: str, height: int = 340) -> go.Figure:
    """Per arm, the mean similarity of the pruned models' maps to their dense model's (95 % bootstrap interval;
    controls as open markers at their sparsity), and where the store has replicates a shaded band: the interval of
    another seed's dense maps against the first seed's (the noise floor), its mean dotted."""
    fig = go.Figure()
    colours = arm_colours(list(arm_labels))
    for arm, g in df.groupby("arm_id", sort=False):
        colour = colours.get(arm, "grey")
        label = arm_labels.get(arm, arm)
        for role, symbol in (("pruned", "circle"), ("control", "circle-open")):
            s = g[g["role"] == role].groupby(x, as_index=False).agg(
                mean=("mean", "mean"), ci_low=("ci_low", "mean"), ci_high=("ci_high", "mean"),
                n_images=("n_images", "sum"), model_id=("model_id", "first")).sort_values(x)
            if s.empty:
                continue
            fig.add_trace(go.Scatter(
                x=s[x] * 100, y=s["mean"], mode="lines+markers" if role == "pruned" else "markers",
                name=f"{label}{' · control' if role == 'control' else ''}",
                marker={"symbol": symbol, "size": 9 if role == "control" else 7}, line={"color": colour},
                customdata=s[["model_id", "ci_low", "ci_high", "n_images"]].to_numpy(),
                error_y={"type": "data", "symmetric": False, "array": s["ci_high"] - s["mean"],
                         "arrayminus": s["mean"] - s["ci_low"]},
                hovertemplate="%{customdata[0]}<br>sparsity %{x:.1f} %<br>mean %{y:.3f} "
                              "[%{customdata[1]:.3f}, %{customdata[2]:.3f}]<br>%{customdata[3]} images<extra></extra>"))
        band = noise[noise["arm_id"] == arm]
        if not band.empty:
            b = band.iloc[0]
            fig.add_hrect(y0=float(b["ci_low"]), y1=float(b["ci_high"]), fillcolor=_rgba(colour, 0.15), line_width=0)
            fig.add_hline(y=float(b["mean"]), line={"color": colour, "dash": "dot", "width": 1},
                          annotation_text=f"{label}: seed vs seed", annotation_font_size=10)
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 10, "b": 0}, xaxis_title="sparsity (%)",
                      yaxis_title=y_title, legend={"orientation": "h", "y": -0.25, "font": {"size": 10}})
    return fig
