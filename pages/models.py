"""Models: every model of the store with its provenance, size and validation metrics, and what each pruning
removed per module kind."""

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
         "params_m", "macs_g", "latency_cpu_ms", "latency_gpu_ms", "parent_id"]
metric_cols = [c for c in metrics.columns if c != "model_id"]
rest = ["run_id", "tasks", "weighting", "seed", "code_version"]
config = {"target_sparsity": st.column_config.NumberColumn("target sparsity", format="percent"),
          "achieved_sparsity": st.column_config.NumberColumn("achieved sparsity", format="percent",
                                                             help="share of parameters removed or zeroed"),
          "channel_sparsity": st.column_config.NumberColumn("channels removed", format="percent"),
          "params_m": st.column_config.NumberColumn("params (M)", format="%.3f"),
          "macs_g": st.column_config.NumberColumn("MACs (G)", format="%.3f",
                                                  help="unstructured masks do not reduce MACs"),
          "latency_cpu_ms": st.column_config.NumberColumn(
              "CPU latency (ms)", format="%.2f",
              help="deployed form, batch 1, one thread, median of 20 runs after warm-up (D27)"),
          "latency_gpu_ms": st.column_config.NumberColumn("GPU latency (ms)", format="%.3f",
                                                          help="when the study was computed on a GPU"),
          "parent_id": "parent", **{c: st.column_config.NumberColumn(c, format="%.4f") for c in metric_cols}}
st.dataframe(table[front + metric_cols + rest], hide_index=True, column_config=config, key="md_table")
st.caption(f"{len(table)} models. Metrics are pixel-pooled over the validation split (D22): segmentation mIoU and "
           "pixel accuracy (higher is better), depth absolute / relative error and normal angles (lower is better).")

st.subheader("What each pruning removed, per module kind")
removed = q(store, "pruning_by_module")
summary = q(store, "pruning_summary")
if arm != "all":
    removed = removed[removed["arm"].fillna("(no arm)") == arm]
    summary = summary[summary["arm"].fillna("(no arm)") == arm]
if removed.empty:
    st.info("No pruned model records what it removed per module kind.")
else:
    removed = removed.assign(model=removed["method"] + removed["variant"].map(lambda v: f" ({v})" if v else "")
                             + " " + (removed["target_sparsity"] * 100).map(lambda s: f"{s:g} %"))
    wide = removed.pivot_table(index=["model_id", "arm", "model", "unit"], columns="module", values="removed",
                               aggfunc="first", sort=False).reset_index()
    kinds = [k for k in dict.fromkeys(removed["module"]) if k in wide.columns]
    st.dataframe(wide[["model", "arm", "unit", *kinds, "model_id"]], hide_index=True, key="md_removed",
                 column_config={k: st.column_config.NumberColumn(k, format="percent") for k in kinds})
    st.caption("Share removed per module kind: output channels of the convolutions that write each kind's "
               "features (structured methods: Network Slimming, HRank, L1-norm filters; attention masks, which "
               "only multiply a feature, are not counted) or weights zeroed (unstructured DiSparse).")
    cols = {"macs_ratio": st.column_config.NumberColumn("dense / pruned MACs", format="%.2f x"),
            "params_ratio": st.column_config.NumberColumn("dense / pruned params", format="%.2f x"),
            "channels_removed": st.column_config.NumberColumn("prunable channels removed", format="percent"),
            "small_gamma_kept": st.column_config.NumberColumn(
                "kept with |γ| < 1e-3", help="kept channels whose BN scale factor is below 1e-3 (nearly dead)"),
            "netslim_mode": st.column_config.TextColumn(
                "Network Slimming mode", help="D23: decoupled (as published), authors (the study's), sgd"),
            "finetune_bn_l1": st.column_config.NumberColumn("fine-tune BN L1", format="%g")}
    st.dataframe(summary[["model_id", "arm", "method", "netslim_mode", "target_sparsity", "channels_removed",
                          "params_before", "params_after", "params_ratio", "macs_before", "macs_after", "macs_ratio",
                          "small_gamma_kept", "finetune_bn_l1"]], hide_index=True, key="md_pruning",
                 column_config={**cols, "target_sparsity": st.column_config.NumberColumn("target", format="percent")})

trivial = metrics[metrics["model_id"].str.startswith("trivial:")]
if not trivial.empty:
    st.markdown("**Trivial predictors** (majority class, mean depth, best constant normal)")
    st.dataframe(trivial, hide_index=True, column_config={c: st.column_config.NumberColumn(c, format="%.4f")
                                                           for c in metric_cols})
st.download_button("Download models (CSV)", table[front + metric_cols + rest].to_csv(index=False).encode(),
                   file_name="models.csv", mime="text/csv", key="md_csv")
