"""Models: every model of the store with its provenance, size and validation metrics."""

from __future__ import annotations

import streamlit as st

from pages.common import q, store_or_stop

st.title("Models")
store = store_or_stop()

models = q(store, "models")
if models.empty:
    st.info("The store has no model yet.")
    st.stop()
metrics = q(store, "metrics_wide")
table = models.merge(metrics, on="model_id", how="left")
arms = ["all", *dict.fromkeys(models["arm"].fillna("(no arm)"))]
arm = st.selectbox("Arm", arms, key="md_arm")
if arm != "all":
    table = table[table["arm"].fillna("(no arm)") == arm]
table = table.assign(params_m=table["params"] / 1e6, macs_g=table["macs"] / 1e9,
                     method=table["pruning_method"].fillna("dense"))
front = ["model_id", "arm", "arch", "dataset", "method", "target_sparsity", "achieved_sparsity", "channel_sparsity",
         "params_m", "macs_g", "parent_id"]
metric_cols = [c for c in metrics.columns if c != "model_id"]
rest = ["run_id", "tasks", "weighting", "seed", "code_version"]
config = {"target_sparsity": st.column_config.NumberColumn("target sparsity", format="percent"),
          "achieved_sparsity": st.column_config.NumberColumn("achieved sparsity", format="percent",
                                                             help="share of parameters removed or zeroed"),
          "channel_sparsity": st.column_config.NumberColumn("channels removed", format="percent"),
          "params_m": st.column_config.NumberColumn("params (M)", format="%.3f"),
          "macs_g": st.column_config.NumberColumn("MACs (G)", format="%.3f",
                                                  help="unstructured masks do not reduce MACs"),
          "parent_id": "parent", **{c: st.column_config.NumberColumn(c, format="%.4f") for c in metric_cols}}
st.dataframe(table[front + metric_cols + rest], hide_index=True, column_config=config, key="md_table")
st.caption(f"{len(table)} models. Metrics are pixel-pooled over the validation split (D22): segmentation mIoU and "
           "pixel accuracy (higher is better), depth absolute / relative error and normal angles (lower is better).")
trivial = metrics[metrics["model_id"].str.startswith("trivial:")]
if not trivial.empty:
    st.markdown("**Trivial predictors** (majority class, mean depth, best constant normal)")
    st.dataframe(trivial, hide_index=True, column_config={c: st.column_config.NumberColumn(c, format="%.4f")
                                                           for c in metric_cols})
st.download_button("Download models (CSV)", table[front + metric_cols + rest].to_csv(index=False).encode(),
                   file_name="models.csv", mime="text/csv", key="md_csv")
