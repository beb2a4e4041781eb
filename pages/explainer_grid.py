"""Compare's grid of every stored explainer's map of one target: explainers as rows, the chosen models (dense and
pruned) as columns, and which models have which explainer (a preset may run the extra explainers on a sub-grid).

Not a page: imported by ``pages/compare.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import streamlit as st

from mtlx_core.store import query
from pages import figures
from pages.common import explainer_label, q


def coverage(store: query.Store, model_ids: Sequence[str], label_of: dict[str, str]) -> list[str]:
    """One line per explainer: the models (of ``model_ids``) that have it at the primary layer."""
    ex = q(store, "explainers", list(model_ids))
    lines = []
    for name, models in zip(ex["explainer"], ex["models"], strict=True):
        have = [m for m in model_ids if m in set(models)]
        which = "every selected model" if len(have) == len(model_ids) else ", ".join(label_of.get(m, m) for m in have)
        lines.append(f"**{explainer_label(name)}**: {which}")
    return lines


def render(store: query.Store, chosen: Sequence[str], label_of: dict[str, str], image: np.ndarray,
           labels: np.ndarray | None, image_id: str, task: str, target_id: int, target_name: str,
           layer: str | None, layer_label: str) -> None:
    """The grid section (behind a toggle when the store has more than one explainer)."""
    names = q(store, "explainers", list(chosen))["explainer"].tolist()
    if len(names) < 2:
        return
    st.subheader(f"Every explainer for target “{target_name}”")
    if not st.toggle("Show every explainer's map side by side", value=True, key="cmp_grid"):
        return
    st.caption("Which models have which explainers (at the primary layer; the layer ablation is Grad-CAM's): "
               + "; ".join(coverage(store, chosen, label_of)) + ". A preset may run the extra explainers on a "
               "sub-grid of the study (the demo: the dense models and the first pruned level of each arm).")
    height = figures.fit_height(image.shape, len(chosen))
    for name in names:
        maps = q(store, "saliency_maps", list(chosen), image_id, task, target_id, layer, name)
        st.markdown(f"**{explainer_label(name)}** at layer {layer_label}")
        for col, m in zip(st.columns(len(chosen)), chosen, strict=True):
            with col:
                if m in maps:
                    st.plotly_chart(figures.overlay(image, maps[m], f"{explainer_label(name)} · {label_of.get(m, m)}",
                                                    labels, height=height),
                                    key=f"cmp_grid_{name}_{m}")
                else:
                    st.caption(f"{label_of.get(m, m)}: no {explainer_label(name)} map of this target here.")
