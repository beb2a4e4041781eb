"""``TrainConfig.threads``: training, fine-tuning and pruning selection run with a fixed torch thread count, so the
demo's weights do not depend on the machine's cores or on precompute's worker count."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from mtlx_core.data.synth import generate_synth
from mtlx_core.train import resolve_config, train
from mtlx_core.train.config import DEMO_FAMO_TRAIN_THREADS, DEMO_TRAIN_THREADS, PRESETS
from mtlx_core.train.loop import training_threads

SMALL = {"n_train": 2, "n_val": 2, "height": 32, "width": 64, "seed": 0}


class ThreadProbe:
    """A training callback that records torch's thread count at every step."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def after_backward(self, model: nn.Module, iteration: int) -> None:
        self.seen.append(torch.get_num_threads())

    def after_step(self, model: nn.Module, iteration: int, lr: float) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@pytest.fixture
def two_threads() -> Any:
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def test_every_demo_training_preset_fixes_its_threads_and_the_paper_presets_do_not() -> None:
    assert {n: c.threads for n, c in PRESETS.items() if n.startswith("demo_")} == {
        "demo_deeplab": DEMO_TRAIN_THREADS, "demo_segnet_mtan_famo": DEMO_FAMO_TRAIN_THREADS,
        "demo_segnet_mtan": DEMO_TRAIN_THREADS}
    assert (DEMO_TRAIN_THREADS, DEMO_FAMO_TRAIN_THREADS) == (1, 2)
    assert all(c.threads is None for n, c in PRESETS.items() if not n.startswith("demo_"))


def test_thread_count_is_part_of_the_run_id_and_none_is_not_hashed() -> None:
    import hashlib
    import json

    cfg = dataclasses.replace(PRESETS["demo_deeplab"], threads=None)
    one, two = dataclasses.replace(cfg, threads=1), dataclasses.replace(cfg, threads=2)
    assert len({cfg.run_id(), one.run_id(), two.run_id()}) == 3
    # a late field at its default is left out of the hash: the id is what it was before the field existed
    d = {k: v for k, v in cfg.to_dict().items()
         if k not in ("device", "eval_every", "checkpoint_every", "num_workers", "data_root", "threads",
                      "bn_l1_mode", "bn_l1_scope", "optimizer")}
    d["data"] = cfg.data_identity()
    assert cfg.fingerprint() == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]
    with pytest.raises(ValueError, match="threads must be None or >= 1"):
        dataclasses.replace(cfg, threads=0)


def test_training_threads_sets_and_restores_the_process_setting(two_threads: None) -> None:
    with training_threads(dataclasses.replace(PRESETS["demo_deeplab"], threads=1)):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with training_threads(dataclasses.replace(PRESETS["demo_deeplab"], threads=None)):
        assert torch.get_num_threads() == 2


def test_training_steps_run_with_the_configs_threads(tmp_path: Path, two_threads: None) -> None:
    root = tmp_path / "data"
    generate_synth(root, **SMALL, progress=False)
    probe = ThreadProbe()
    cfg = resolve_config("demo_segnet_mtan", data_root=str(root), iterations=2, batch_size=2, width=0.0625,
                         checkpoint_every=1, device="cpu")
    assert cfg.threads == 1
    train(cfg, tmp_path / "runs", callbacks=[probe], progress=False)
    assert probe.seen == [1, 1]
    assert torch.get_num_threads() == 2
