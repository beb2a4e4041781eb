"""Pruned runs: folder layout, reload at the smaller size, HRank round chaining, idempotence, resume, CLI errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mtlx_core.models.surgery import count_params
from mtlx_core.prune import __main__ as prune_cli
from mtlx_core.prune import pipeline, prune_run
from mtlx_core.prune.record import PruningRecord
from mtlx_core.runs import RunError, load_run
from mtlx_core.train import resolve_config, train


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Tiny dense parents of the three demo presets in a models folder."""
    from mtlx_core.data.synth import generate_synth

    root = tmp_path_factory.mktemp("prune")
    data = root / "data"
    generate_synth(data, n_train=4, n_val=2, height=32, width=64, seed=1, progress=False)
    parents = {}
    for preset in ("demo_deeplab", "demo_segnet_mtan_famo", "demo_segnet_mtan"):
        kw = {"arch_kwargs": {"head_hidden": 8}} if preset == "demo_deeplab" else {}
        cfg = resolve_config(preset, data_root=str(data), iterations=2, batch_size=2, width=0.0625,
                             checkpoint_every=2, device="cpu", **kw)
        parents[preset] = train(cfg, root / "runs", progress=False).run_id
    return root / "runs", parents


@pytest.mark.parametrize(("preset", "method"), [("demo_segnet_mtan_famo", "netslim"), ("demo_deeplab", "hrank"),
                                                ("demo_deeplab", "netslim"), ("demo_segnet_mtan", "l1_filter")])
def test_structured_run_reloads_at_the_smaller_size_with_weights_only(store, preset: str, method: str):
    models, parents = store
    result = prune_run(parents[preset], method, 0.5, finetune_iterations=2, models_dir=models)
    state = torch.load(result.path / "model.pt", weights_only=True)
    config = json.loads((result.path / "config.json").read_text())
    run = load_run(result.run_id, models)  # rebuilt with resize_to_state_dict: "structured": true
    pruning = config["pruning"]
    assert config["kind"] == "prune"
    assert config["parent_id"] == parents[preset]
    assert pruning["structured"] is True
    assert count_params(run.model) == pruning["params_after"] < pruning["params_before"]
    assert pruning["params_before"] == count_params(load_run(parents[preset], models).model)
    assert pruning["macs_after"] < pruning["macs_before"]
    assert pruning["input_shape"] == [3, 32, 64]
    assert pruning["channels_removed"] > 0.3
    assert pruning["achieved_sparsity"] == pruning["param_sparsity"]
    assert all(torch.equal(state[k], v) for k, v in run.model.state_dict().items())
    out = run.model(torch.rand(1, 3, 32, 64))
    assert {t: o.shape[1] for t, o in out.items()} == config["architecture"]["task_channels"]
    metrics = json.loads((result.path / "metrics.json").read_text())
    assert set(metrics["metrics"]) == set(config["tasks"])


def test_disparse_run_records_its_sparsity_and_keeps_zeros(store):
    models, parents = store
    result = prune_run(parents["demo_deeplab"], "disparse", 0.7, variant="magnitude", finetune_iterations=2,
                       models_dir=models)
    pruning = json.loads((result.path / "config.json").read_text())["pruning"]
    assert pruning["structured"] is False
    assert pruning["variant"] == "magnitude"
    assert abs(pruning["achieved_sparsity"] - 0.7) <= 0.005
    run = load_run(result.run_id, models)
    from mtlx_core.prune.masks import weight_sparsity

    assert abs(weight_sparsity(run.model) - 0.7) <= 0.005  # fine-tuning did not revive pruned weights
    assert pruning["finetune"]["iterations"] == 2
    assert pruning["finetune"]["lr"] == 1e-4


def test_hrank_75_is_round_two_on_the_reused_50_run(store):
    models, parents = store
    first = prune_run(parents["demo_segnet_mtan"], "hrank", 0.5, finetune_iterations=2, models_dir=models)
    stamp = (first.path / "model.pt").stat().st_mtime_ns
    second = prune_run(parents["demo_segnet_mtan"], "hrank", 0.75, finetune_iterations=2, models_dir=models)
    config = json.loads((second.path / "config.json").read_text())
    assert config["parent_id"] == first.run_id
    assert config["pruning"]["details"]["round"] == 2
    assert config["pruning"]["details"]["rank_images"] == 4  # every training image (fewer than the preset's 256)
    assert config["pruning"]["root_parent_id"] == parents["demo_segnet_mtan"]
    assert (first.path / "model.pt").stat().st_mtime_ns == stamp  # reused, not retrained
    assert config["pruning"]["channels_removed"] == pytest.approx(0.75, abs=0.08)  # odd sizes round down
    again = prune_run(parents["demo_segnet_mtan"], "hrank", 0.75, finetune_iterations=2, models_dir=models)
    assert again.run_id == second.run_id
    assert again.metrics == second.metrics


class KillAfter:
    def after_backward(self, model, iteration):
        pass

    def after_step(self, model, iteration, lr):
        if iteration == 2:
            raise KeyboardInterrupt("killed")

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@pytest.mark.parametrize(("preset", "method", "variant"), [("demo_segnet_mtan_famo", "netslim", None),
                                                           ("demo_deeplab", "disparse", "static")])
def test_interrupted_prune_run_resumes_to_the_uninterrupted_weights(store, tmp_path: Path, monkeypatch,
                                                                     preset: str, method: str, variant: str | None):
    models, parents = store
    full = prune_run(parents[preset], method, 0.6, variant=variant, finetune_iterations=4, models_dir=models)
    shutil.copytree(models / parents[preset], tmp_path / parents[preset])
    real_train = pipeline.train

    def killed_train(*args, callbacks=(), **kwargs):
        return real_train(*args, callbacks=[*callbacks, KillAfter()], **kwargs)

    monkeypatch.setattr(pipeline, "train", killed_train)
    with pytest.raises(KeyboardInterrupt):
        prune_run(parents[preset], method, 0.6, variant=variant, finetune_iterations=4, models_dir=tmp_path)
    assert (tmp_path / full.run_id / "train_state.pt").is_file()
    monkeypatch.undo()
    resumed = prune_run(parents[preset], method, 0.6, variant=variant, finetune_iterations=4, models_dir=tmp_path)
    assert resumed.run_id == full.run_id
    a = torch.load(full.path / "model.pt", weights_only=True)
    b = torch.load(resumed.path / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_prints_the_run_id_last(store, capsys):
    models, parents = store
    argv = ["--from", parents["demo_segnet_mtan_famo"], "--method", "netslim", "--sparsity", "0.5",
            "--finetune-iters", "2", "--models-dir", str(models), "--no-progress"]
    assert prune_cli.main(argv) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads((models / run_id / "config.json").read_text())["pruning"]["method"] == "netslim"


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "netslim", "--sparsity", "0"], "sparsity must be a fraction in (0, 1)"),
    (["--method", "netslim", "--sparsity", "1.5"], "sparsity must be a fraction in (0, 1)"),
    (["--method", "obd", "--sparsity", "0.5"], "valid methods: disparse, netslim, hrank, l1_filter"),
    (["--method", "hrank", "--sparsity", "0.6"], "one of the round results 0.5, 0.75, 0.875, 0.9375"),
    (["--method", "netslim", "--sparsity", "0.5", "--variant", "static"],
     "has no variant 'static'; valid variants: decoupled, authors, sgd"),
    (["--method", "hrank", "--sparsity", "0.5", "--netslim-mode", "authors"], "an option of --method netslim"),
    (["--method", "netslim", "--sparsity", "0.5", "--netslim-mode", "sgd", "--variant", "authors"], "disagree"),
    (["--method", "disparse", "--sparsity", "0.5", "--variant", "dynamic"], "valid variants: static, magnitude"),
    (["--method", "hrank", "--sparsity", "0.5", "--preset", "demo_deeplab_disparse"], "prunes demo_deeplab runs"),
])
def test_cli_rejects_bad_requests_with_exit_code_2(store, caplog, args: list[str], message: str):
    models, parents = store
    argv = ["--from", parents["demo_segnet_mtan"], *args, "--models-dir", str(models)]
    assert prune_cli.main(argv) == 2
    assert message in caplog.text


def test_netslim_mode_must_be_the_parents_sparsity_training_mode(store, caplog):
    models, parents = store  # the demo FAMO parent is sparsity-trained in the decoupled mode
    argv = ["--from", parents["demo_segnet_mtan_famo"], "--method", "netslim", "--netslim-mode", "authors",
            "--sparsity", "0.5", "--models-dir", str(models)]
    assert prune_cli.main(argv) == 2
    assert "sparsity-trained in Network Slimming mode 'decoupled'; mode 'authors' prunes a parent" in caplog.text


@pytest.mark.parametrize("mode", ["decoupled", "authors", "sgd"])
def test_cli_trains_a_parent_in_each_netslim_mode_and_prunes_it_in_that_mode(store, capsys, mode: str):
    from mtlx_core.train import __main__ as train_cli

    models, _ = store
    assert train_cli.main(["--preset", "demo_segnet_mtan_famo", "--data", str(models.parent / "data"),
                           "--iterations", "2", "--batch-size", "2", "--width", "0.0625", "--device", "cpu",
                           "--netslim-mode", mode, "--models-dir", str(models), "--no-progress"]) == 0
    parent = capsys.readouterr().out.strip().splitlines()[-1]
    train_cfg = json.loads((models / parent / "config.json").read_text())["train"]
    assert (train_cfg["bn_l1_mode"], train_cfg["optimizer"]) == (mode, "sgd" if mode == "sgd" else "adam")
    assert prune_cli.main(["--from", parent, "--method", "netslim", "--netslim-mode", mode, "--sparsity", "0.5",
                           "--finetune-iters", "1", "--models-dir", str(models), "--no-progress"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    record = PruningRecord.from_dict(json.loads((models / run_id / "config.json").read_text())["pruning"])
    assert record.netslim_mode == mode
    assert (record.finetune.bn_l1 > 0) == (mode == "authors")  # L1 while fine-tuning: only the authors'
    assert record.finetune.optimizer == "adam"


def test_netslim_record_has_its_mode_module_shares_and_small_gammas(store):
    models, parents = store
    result = prune_run(parents["demo_segnet_mtan_famo"], "netslim", 0.5, finetune_iterations=2, models_dir=models)
    record = PruningRecord.from_dict(json.loads((result.path / "config.json").read_text())["pruning"])
    assert (record.variant, record.netslim_mode) == ("decoupled", "decoupled")
    assert record.finetune.bn_l1 == 0.0  # no L1 while fine-tuning in the published modes
    assert [m.kind for m in record.removed_by_kind] == ["trunk_encoder", "trunk_decoder", "shared_attention",
                                                       "attention_hidden", "heads"]
    shares = record.removed_share()
    assert shares["heads"] == 0.0  # SegNet-MTAN's heads are not prunable
    assert record.small_gamma_kept is not None
    assert record.small_gamma_kept >= 0


def test_cli_missing_parent_lists_the_available_runs(store, caplog):
    models, parents = store
    assert prune_cli.main(["--from", "nope", "--method", "netslim", "--sparsity", "0.5",
                           "--models-dir", str(models)]) == 2
    assert "run 'nope' does not exist" in caplog.text
    assert parents["demo_deeplab"] in caplog.text


def test_pruned_runs_cannot_be_parents(store):
    models, parents = store
    child = prune_run(parents["demo_segnet_mtan_famo"], "netslim", 0.5, finetune_iterations=2, models_dir=models)
    with pytest.raises(RunError, match="prune a dense training run"):
        prune_run(child.run_id, "netslim", 0.5, models_dir=models)


class RecordInit:
    """Snapshots the weights at the first backward (still the initialisation)."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}

    def after_backward(self, model, iteration):
        if iteration == 0:  # parameters only: the forward pass already moved the BN running statistics
            self.state = {k: v.detach().clone() for k, v in model.named_parameters()}

    def after_step(self, model, iteration, lr):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_static_disparse_masks_the_dense_runs_own_initialisation(store, tmp_path: Path, monkeypatch):
    models, _ = store
    cfg = resolve_config("demo_segnet_mtan_famo", data_root=str(models.parent / "data"), iterations=1,
                         batch_size=2, width=0.0625, checkpoint_every=1, device="cpu")
    record = RecordInit()
    parent = train(cfg, tmp_path, callbacks=[record], progress=False).run_id
    seen = {}
    real_train = pipeline.train

    def spy(*args, model=None, **kwargs):
        seen["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return real_train(*args, model=model, **kwargs)

    monkeypatch.setattr(pipeline, "train", spy)
    prune_run(parent, "disparse", 0.8, variant="static", finetune_iterations=1, models_dir=tmp_path)
    assert set(record.state) <= set(seen["state"])
    for name, init in record.state.items():
        start = seen["state"][name]
        if name.endswith(".weight") and start.dim() == 4:  # pruned conv weights: masked initialisation
            assert torch.equal(start, init * (start != 0)), name
        else:  # biases (depth bias initialisation included), BN
            assert torch.equal(start, init), name
