"""Training: run folders, exact resume after a kill, clear errors for bad presets, data and checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtlx_core.data.dataset import DatasetError
from mtlx_core.runs import RunError, load_run
from mtlx_core.train import __main__ as train_cli
from mtlx_core.train import resolve_config, train


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mtlx_core.data.synth import generate_synth

    root = tmp_path_factory.mktemp("synth") / "data"
    generate_synth(root, n_train=8, n_val=4, height=32, width=64, seed=1, progress=False)
    return root


def tiny_config(data: Path, preset: str = "demo_segnet_mtan_famo", **kw):
    args = {"data_root": str(data), "iterations": 6, "batch_size": 2, "width": 0.0625, "checkpoint_every": 3,
            "device": "cpu"}
    args.update(kw)
    return resolve_config(preset, **args)


class KillAfter:
    """Raises after the given iteration, like a process killed mid-run."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_backward(self, model, iteration):
        pass

    def after_step(self, model, iteration, lr):
        if iteration == self.iteration:
            raise KeyboardInterrupt("killed")

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@pytest.mark.parametrize("preset", ["demo_segnet_mtan_famo", "demo_deeplab"])
def test_resumed_run_equals_uninterrupted_run(tiny_synth: Path, tmp_path: Path, preset: str):
    kw = {"arch_kwargs": {"head_hidden": 8}} if preset == "demo_deeplab" else {}
    cfg = tiny_config(tiny_synth, preset, **kw)
    full = train(cfg, tmp_path / "a", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", callbacks=[KillAfter(4)], progress=False)
    partial = tmp_path / "b" / cfg.run_id()
    assert (partial / "train_state.pt").is_file()
    assert not (partial / "metrics.json").exists()
    resumed = train(cfg, tmp_path / "b", progress=False)
    a = torch.load(full.path / "model.pt", weights_only=True)
    b = torch.load(resumed.path / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not (resumed.path / "train_state.pt").exists()


def test_periodic_evaluation_does_not_change_the_trained_weights(tiny_synth: Path, tmp_path: Path):
    """``eval_every`` is not part of the run id, so it must not change the weights (DeepLab has dropout)."""
    kw = {"arch_kwargs": {"head_hidden": 8}}
    quiet = train(tiny_config(tiny_synth, "demo_deeplab", eval_every=0, **kw), tmp_path / "a", progress=False)
    chatty = train(tiny_config(tiny_synth, "demo_deeplab", eval_every=2, **kw), tmp_path / "b", progress=False)
    assert quiet.run_id == chatty.run_id
    a = torch.load(quiet.path / "model.pt", weights_only=True)
    b = torch.load(chatty.path / "model.pt", weights_only=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_run_folder_rebuilds_the_model_alone(tiny_synth: Path, tmp_path: Path):
    cfg = tiny_config(tiny_synth, "demo_segnet_mtan")
    result = train(cfg, tmp_path, progress=False)
    config = json.loads((result.path / "config.json").read_text())
    assert config["seed"] == cfg.seed
    assert config["code_version"]
    assert config["tasks"] == list(cfg.tasks)
    assert config["architecture"]["arch"] == "segnet_mtan"
    metrics = json.loads((result.path / "metrics.json").read_text())
    assert set(metrics["metrics"]) == set(metrics["baselines"]) == {"segmentation", "depth", "normals"}
    run = load_run(result.run_id, tmp_path)
    x = torch.rand(1, 3, 32, 64)
    assert set(run.model(x)) == {"segmentation", "depth", "normals"}
    # a second call does no work and returns the same run
    again = train(cfg, tmp_path, progress=False)
    assert again.run_id == result.run_id
    assert again.metrics == metrics


def test_truncated_checkpoint_is_a_clear_error(tiny_synth: Path, tmp_path: Path):
    result = train(tiny_config(tiny_synth, iterations=1), tmp_path, progress=False)
    blob = (result.path / "model.pt").read_bytes()
    (result.path / "model.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(RunError, match="corrupted"):
        load_run(result.run_id, tmp_path)


def test_mismatched_checkpoint_is_a_clear_error(tiny_synth: Path, tmp_path: Path):
    result = train(tiny_config(tiny_synth, iterations=1), tmp_path, progress=False)
    config = json.loads((result.path / "config.json").read_text())
    config["architecture"]["task_channels"]["segmentation"] = 5
    (result.path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match="does not match the architecture"):
        load_run(result.run_id, tmp_path)


def test_missing_run_lists_available_runs(tmp_path: Path):
    with pytest.raises(RunError, match="does not exist"):
        load_run("nope", tmp_path)


def test_unknown_preset_lists_valid_presets():
    with pytest.raises(ValueError, match="valid presets: nyuv2_deeplab, cityscapes_segnet_mtan_famo"):
        resolve_config("imagenet")


def test_missing_data_folder_names_it(tmp_path: Path):
    cfg = resolve_config("nyuv2_segnet_mtan", data_root=str(tmp_path / "nyuv2"), device="cpu")
    with pytest.raises(DatasetError, match=r"data folder .*nyuv2 does not exist"):
        train(cfg, tmp_path / "runs", progress=False)


def test_cli_prints_run_id_last_and_fails_cleanly(tiny_synth: Path, tmp_path: Path, capsys):
    argv = ["--preset", "demo_segnet_mtan_famo", "--data", str(tiny_synth), "--iterations", "1", "--batch-size",
            "2", "--width", "0.0625", "--device", "cpu", "--models-dir", str(tmp_path), "--no-progress"]
    assert train_cli.main(argv) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert (tmp_path / run_id / "metrics.json").is_file()
    assert train_cli.main(["--preset", "nope"]) == 2
    assert train_cli.main(["--preset", "nyuv2_deeplab", "--data", str(tmp_path / "missing")]) == 2


SMALL_SYNTH = {"n_train": 4, "n_val": 2, "height": 32, "width": 64, "seed": 0}


def test_demo_cache_holding_another_dataset_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mtlx_core.data.synth import generate_synth
    from mtlx_core.train.config import synth_cache
    from mtlx_core.train.loop import prepare_data

    monkeypatch.chdir(tmp_path)
    cache = synth_cache(SMALL_SYNTH)
    generate_synth(Path(cache), **{**SMALL_SYNTH, "n_val": 3}, progress=False)  # same folder, other request
    cfg = resolve_config("demo_segnet_mtan", synth=SMALL_SYNTH, data_root=cache)
    with pytest.raises(FileExistsError, match=r"n_val: 3 there, 2 requested"):
        prepare_data(cfg)


def test_demo_cache_is_generated_once_and_named_after_the_generator(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch):
    from mtlx_core.data.synth import GENERATOR_VERSION
    from mtlx_core.train.config import synth_cache
    from mtlx_core.train.loop import prepare_data

    monkeypatch.chdir(tmp_path)
    assert f"-g{GENERATOR_VERSION}-" in synth_cache(SMALL_SYNTH)
    cfg = resolve_config("demo_segnet_mtan", synth=SMALL_SYNTH, data_root=synth_cache(SMALL_SYNTH))
    train_ds, val_ds = prepare_data(cfg)
    assert (len(train_ds), len(val_ds)) == (4, 2)
    stamp = (tmp_path / synth_cache(SMALL_SYNTH) / "meta.json").stat().st_mtime_ns
    prepare_data(cfg)  # the matching cache is reused as it is
    assert (tmp_path / synth_cache(SMALL_SYNTH) / "meta.json").stat().st_mtime_ns == stamp
