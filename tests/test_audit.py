"""``python -m mtlx_core.audit`` on the example of ``examples/own_model`` at a tiny size: a plugin model trained in
plain PyTorch, pruned with Torch-Pruning, ``torch.nn.utils.prune`` and mtlx's Network Slimming through the derived
channel plan, audited into a store; and bad inputs."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

from mtlx_core.audit.__main__ import main
from mtlx_core.data.synth import generate_synth
from mtlx_core.plugins import register_model
from mtlx_core.stats.verdict import VerdictSettings
from mtlx_core.store.snapshot import open_readonly
from mtlx_core.store.verdict import compute_verdict
from mtlx_core.store.verdict_data import ConnectionReader

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_model"
TINY = ["--backbone", "small", "--width", "0.25", "--inter-channels", "16"]
TINY_ARGS = ["--model-arg", "backbone=small", "--model-arg", "width=0.25", "--model-arg", "inter_channels=16"]
TASKS = ("segmentation", "depth")


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_example", EXAMPLE / "run_example.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # puts examples/own_model on sys.path (the example package)
    return module


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The example's path at a tiny size: train, prune three ways, audit 4 images (one thread)."""
    root = tmp_path_factory.mktemp("audit")
    data = root / "data"
    generate_synth(data, n_train=16, n_val=6, height=32, width=64, seed=0, progress=False)
    threads = torch.get_num_threads()
    try:
        rc = _example().main(["--data", str(data), "--out", str(root / "out"), *TINY, "--iterations", "20",
                              "--finetune", "2", "--l1-filter", "0", "--images", "4", "--threads", "1",
                              "--tp-ratio", "0.5", "--unstructured", "0.6", "--netslim", "0.5",
                              "--slim-steps", "4"])
    finally:
        torch.set_num_threads(threads)
    return {"rc": rc, "root": root, "data": data, "out": root / "out", "store": root / "out" / "audit.duckdb"}


def _rows(store: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = open_readonly(store)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _audit_args(data: Path, dense: Path, pruned: list[Path], store: Path, tasks: str = "segmentation,depth",
                model: str = "own_lraspp") -> list[str]:
    return ["--plugin", "own_model", "--model", model, "--data", str(data), "--dataset", "synth", "--tasks", tasks,
            "--dense", str(dense), *[x for p in pruned for x in ("--pruned", str(p))], "--store", str(store),
            "--images", "2", "--no-progress", *TINY_ARGS]


def test_the_example_path_audits_the_dense_and_every_pruned_checkpoint(audited: dict[str, Any]) -> None:
    assert audited["rc"] == 0
    models = _rows(audited["store"], "SELECT model_id, parent_id, pruning_method, target_sparsity FROM models "
                   "ORDER BY target_sparsity")
    assert len(models) == 4
    dense_id = models[0][0]
    assert models[0][1:] == (None, None, 0.0)
    assert all(m[1] == dense_id and m[2] == "external" and m[3] > 0 for m in models[1:])
    formats = {json.loads(c)["imported"]["format"] for (c,) in _rows(audited["store"], "SELECT config FROM models")}
    assert formats == {"plain", "torch_pruning", "torch_prune", "structured"}


def _conv_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.endswith("weight") and v.dim() == 4}


def test_measured_sparsity_is_the_zero_weights_or_the_removed_channels(audited: dict[str, Any]) -> None:
    out = audited["out"]
    got = dict(_rows(audited["store"], "SELECT json_extract_string(config, '$.imported.format'), "
                     "achieved_sparsity FROM models WHERE parent_id IS NOT NULL"))
    # torch.nn.utils.prune: the share of conv weights the masks zero (the network has no Linear layer)
    masked = torch.load(out / "torch_prune_l1.pt", weights_only=True)
    masks = [v for k, v in masked.items() if k.endswith("weight_mask")]
    orig = [masked[k.replace("_mask", "_orig")] for k, v in masked.items() if k.endswith("weight_mask")]
    zeros = sum(int(((o * m) == 0).sum()) for o, m in zip(orig, masks, strict=True))
    assert got["torch_prune"] == pytest.approx(zeros / sum(m.numel() for m in masks), abs=1e-9)
    assert got["torch_prune"] == pytest.approx(0.6, abs=0.01)
    # Torch-Pruning: the share of conv output channels removed, against the dense checkpoint (the imported run's
    # weights are the Torch-Pruning file's tensors at their stored shapes)
    dense = _conv_weights(torch.load(out / "dense.pt", weights_only=True))
    (run,) = _rows(audited["store"], "SELECT checkpoint FROM models WHERE json_extract_string(config, "
                   "'$.imported.format') = 'torch_pruning'")[0]
    small = _conv_weights(torch.load(run, weights_only=True))
    removed = 1 - sum(small[f"net.{k}"].shape[0] for k in dense) / sum(v.shape[0] for v in dense.values())
    assert got["torch_pruning"] == pytest.approx(removed, abs=1e-9)
    assert 0.2 < got["torch_pruning"] < 0.6
    # mtlx's Network Slimming through the derived plan: a plain state dict of the smaller model, measured the same way
    slim = _conv_weights(torch.load(out / "mtlx_netslim.pt", weights_only=True))
    removed = 1 - sum(slim[k].shape[0] for k in dense) / sum(v.shape[0] for v in dense.values())
    assert got["structured"] == pytest.approx(removed, abs=1e-9)
    assert 0.2 < got["structured"] < 0.6


def test_every_model_and_task_has_faithfulness_rows_and_task_metrics(audited: dict[str, Any]) -> None:
    store = audited["store"]
    models = [m for (m,) in _rows(store, "SELECT model_id FROM models")]
    metrics = {m for (m,) in _rows(store, "SELECT DISTINCT metric FROM faithfulness")}
    # the demo's metric family: AbPC of Deletion (docs/demo_tuning.md, round 10)
    assert metrics == {"irof", "deletion", "insertion", "abpc_deletion", "rma", "pointing", "leakage"}
    # every model explains every task with every metric (a map may be all zero: status zero_saliency at 4 steps of
    # training), and its random orderings are scored
    explained = set(_rows(store, "SELECT model_id, task, metric FROM faithfulness WHERE explainer = 'gradcam' "
                                 "AND layer_role = 'primary' GROUP BY ALL"))
    assert explained == {(m, t, x) for m in models for t in TASKS for x in metrics}
    chance = set(_rows(store, "SELECT model_id, task FROM faithfulness WHERE explainer = 'random' AND status = 'ok' "
                              "GROUP BY ALL"))
    assert chance == {(m, t) for m in models for t in TASKS}
    primary = set(_rows(store, "SELECT model_id, task FROM task_metrics WHERE is_primary AND model_id NOT LIKE "
                               "'trivial:%'"))
    assert primary == {(m, t) for m in models for t in TASKS}
    assert _rows(store, "SELECT count(*) FROM task_metrics WHERE model_id = 'trivial:synth'")[0][0] > 0
    costs = _rows(store, "SELECT params, macs, latency_cpu_ms FROM models")
    assert all(p > 0 and m > 0 and lat > 0 for p, m, lat in costs)


def test_the_verdict_compares_each_pruned_model_with_the_dense_one(audited: dict[str, Any]) -> None:
    con = open_readonly(audited["store"])
    try:
        cells = compute_verdict(ConnectionReader(con), VerdictSettings(n_boot=200)).cells
        # (pruned model, task) pairs with a scored explanation of the same image and target as the dense model's
        paired = set(con.execute(
            "SELECT p.model_id, p.task FROM faithfulness p JOIN models m USING (model_id) JOIN faithfulness d "
            "ON d.model_id = m.parent_id AND d.image_id = p.image_id AND d.task = p.task AND d.target_id = p.target_id "
            "AND d.metric = p.metric AND d.explainer = 'gradcam' AND d.status = 'ok' WHERE p.explainer = 'gradcam' "
            "AND p.status = 'ok' AND p.layer_role = 'primary' GROUP BY ALL").fetchall())
    finally:
        con.close()
    dense_cells = cells[(cells["reference"] == "dense") & cells["primary"]]
    # pruned models with scored explanations to compare (at this tiny size some maps are all zero: the dense
    # model's depth maps, the slimmed model's segmentation maps)
    assert len({m for m, _ in paired}) >= 2
    assert set(zip(dense_cells["model_id"], dense_cells["task"], strict=True)) == paired
    assert set(dense_cells["verdict"]) <= {"lower", "higher", "equivalent", "inconclusive"}


def test_the_app_opens_the_store_as_a_study_with_one_arm(audited: dict[str, Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from mtlx_core.store import query
    from mtlx_core.store.reader import open_store

    store = open_store(audited["store"])
    arms = query.arms(store)
    assert len(arms) == 1
    line = query.arm_models(store, arms["arm_id"][0])
    assert len(line) == 4
    assert bool(line["is_dense"][0])
    assert query.overview(store)["meta"]["preset"] == "audit"
    monkeypatch.setenv("MTLX_STORE", str(audited["store"]))
    for page in (None, "pages/models.py"):
        at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
        at.run()
        if page is not None:
            at.switch_page(page)
            at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error


def test_running_the_audit_again_does_no_work(audited: dict[str, Any]) -> None:
    out, store = audited["out"], audited["store"]
    before = _rows(store, "SELECT count(*) FROM units")[0][0]
    args = ["--plugin", "own_model", "--model", "own_lraspp", "--data", str(audited["data"]), "--dataset", "synth",
            "--tasks", "segmentation,depth", "--dense", str(out / "dense.pt"), "--pruned",
            str(out / "torch_pruning.pt"), "--pruned", str(out / "torch_prune_l1.pt"), "--store", str(store),
            "--images", "4", "--no-progress", "--threads", "1", *TINY_ARGS]
    assert main(args) == 0
    assert _rows(store, "SELECT count(*) FROM units")[0][0] == before


def test_the_imported_run_ids_do_not_depend_on_where_the_data_is_mounted(audited: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    out = audited["out"]
    moved = tmp_path / "elsewhere" / "rooms"
    shutil.copytree(audited["data"], moved)
    runs = out / "audit_models"
    before = sorted(p.name for p in runs.iterdir())
    store = tmp_path / "moved.duckdb"
    args = _audit_args(moved, out / "dense.pt", [out / "torch_pruning.pt"], store)
    assert main([*args, "--models-dir", str(runs), "--threads", "1"]) == 0
    assert sorted(p.name for p in runs.iterdir()) == before  # the run folders were found again, none imported
    ids = {m for (m,) in _rows(store, "SELECT model_id FROM models")}
    assert len(ids) == 2
    assert ids <= {m for (m,) in _rows(audited["store"], "SELECT model_id FROM models")}


# --- bad input: exit code 2, the named message, no store --------------------------------------------------------

def _drops_depth(task_channels: dict[str, int], **kwargs: Any) -> nn.Module:
    from own_model import build

    class SegOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = build(task_channels, **kwargs)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"segmentation": self.inner(x)["segmentation"]}

    return SegOnly()


def _bad(audited: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture, args: list[str]) -> str:
    caplog.set_level(logging.ERROR, logger="mtlx_core.audit")
    assert main(args) == 2
    assert not (tmp_path / "bad.duckdb").exists()
    assert not (tmp_path / "bad_models").exists()
    return caplog.text


def test_a_checkpoint_that_does_not_fit_names_the_missing_and_unexpected_keys(
        audited: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = torch.load(audited["out"] / "dense.pt", weights_only=True)
    first = next(iter(state))
    state["extra.weight"] = state.pop(first)
    torch.save(state, tmp_path / "wrong.pt")
    text = _bad(audited, tmp_path, caplog, _audit_args(audited["data"], audited["out"] / "dense.pt",
                                                       [tmp_path / "wrong.pt"], tmp_path / "bad.duckdb"))
    assert "--pruned" in text
    assert first in text
    assert "extra.weight" in text
    assert "missing" in text


def test_a_missing_data_folder_is_named(audited: dict[str, Any], tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    text = _bad(audited, tmp_path, caplog, _audit_args(tmp_path / "no_data", audited["out"] / "dense.pt",
                                                       [audited["out"] / "torch_prune_l1.pt"], tmp_path / "bad.duckdb"))
    assert f"--data {tmp_path / 'no_data'}" in text
    assert "does not exist" in text


def test_a_task_the_model_does_not_output_is_named(audited: dict[str, Any], tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    register_model("own_lraspp_seg_only", _drops_depth, explain_layer="inner.encoder_high",
                   task_modules={"segmentation": ("inner.heads.segmentation",)})
    state = {f"inner.{k}": v for k, v in torch.load(audited["out"] / "dense.pt", weights_only=True).items()}
    torch.save(state, tmp_path / "dense.pt")
    text = _bad(audited, tmp_path, caplog, _audit_args(audited["data"], tmp_path / "dense.pt",
                                                       [audited["out"] / "torch_prune_l1.pt"], tmp_path / "bad.duckdb",
                                                       model="own_lraspp_seg_only"))
    assert "depth" in text
    assert "missing" in text
    assert "outputs" in text


def test_an_explanation_layer_that_does_not_exist_lists_candidates(
        audited: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from own_model import build

    register_model("own_lraspp_bad_layer", build, explain_layer="encoder_hihg",
                   task_modules={t: (f"heads.{t}",) for t in TASKS})
    text = _bad(audited, tmp_path, caplog, _audit_args(audited["data"], audited["out"] / "dense.pt",
                                                       [audited["out"] / "torch_prune_l1.pt"], tmp_path / "bad.duckdb",
                                                       model="own_lraspp_bad_layer"))
    assert "encoder_hihg" in text
    assert "encoder_high" in text


def test_model_args_are_json_values_or_strings() -> None:
    from mtlx_core.audit import parse_model_args

    assert parse_model_args(["width=0.25", "inter_channels=8", "backbone=small", "flag=true"]) == {
        "width": 0.25, "inter_channels": 8, "backbone": "small", "flag": True}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
