"""The store fingerprint: equal for the same content written in another order and at other times, different
as soon as one value differs; the ``python -m mtlx_core.store fingerprint`` command."""

from __future__ import annotations

import json
import logging
import math
import struct
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mtlx_core.store.__main__ import main
from mtlx_core.store.fingerprint import encode_value, store_fingerprint
from mtlx_core.store.writer import TABLES, StoreWriter, UnitRows

IMAGE = bytes(range(200))


def _model(run: str, *, latency: float = 2.5, cpu: str = "x86_64", data_root: str = "/data/synth",
           sparsity: float = 0.5, reverse: bool = False) -> dict[str, Any]:
    config = {"run_id": run, "code_version": "0.1.0+gaaaa", "train": {"data_root": data_root, "lr": 0.004}}
    costs = {"runs": 20, "threads": 1, "cpu": cpu}
    if reverse:  # the same JSON objects with their keys in another order
        config, costs = dict(reversed(config.items())), dict(reversed(costs.items()))
    return {"model_id": run, "arm_id": "arm", "tasks": ["segmentation", "depth"], "target_sparsity": sparsity,
            "params": 1234, "checkpoint": f"{data_root}/models/{run}/model.pt", "config": json.dumps(config),
            "code_version": "0.1.0+gaaaa", "latency_cpu_ms": latency, "latency_gpu_ms": None,
            "cost_settings": json.dumps(costs)}


def _faith(model: str, target: int, score: float, curve: list[float], fill: str = "quantus") -> dict[str, Any]:
    return {"model_id": model, "image_id": "img0", "task": "depth", "target_id": target, "explainer": "gradcam",
            "layer": "enc", "metric": "irof", "ordering": "morf", "replicate": 0, "settings_key": "k",
            "curve": curve, "x": [0.0, 0.5, 1.0], "score": score, "score_norm": score / 10,
            "status": "ok", "settings": json.dumps({"metric": {"fill": fill}, "seed": 0})}


def _units(**change: Any) -> list[UnitRows]:
    """Two units: a training (model rows) and an explanation (image and faithfulness rows); ``change`` alters
    one value (``score``, ``curve``, ``blob``, ``fill``) or something the fingerprint leaves out."""
    score = change.get("score", 3.25)
    image = change.get("blob", IMAGE)
    extra = {k: change[k] for k in ("latency", "cpu", "data_root", "reverse") if k in change}
    train = UnitRows("train:arm:m1", "train", {"models": [_model("m1", **extra), _model("m2", sparsity=0.0)]},
                     arm_id="arm", model_id="m1", seconds=change.get("seconds", 1.0),
                     cpu_seconds=change.get("seconds", 1.0) / 2)
    faith = [_faith("m1", 0, score, change.get("curve", [1.0, 0.4, 0.1]), change.get("fill", "quantus")),
             _faith("m1", 1, 7.5, [1.0, math.nan, 0.0]), _faith("m2", 0, -0.0, [])]
    explain = UnitRows("explain:m1:b", "explain", {
        "images": [{"image_id": "img0", "dataset": "synth", "split": "val", "idx": 0, "height": 10,
                    "width": 20, "image": image}],
        "faithfulness": faith[::-1] if change.get("reverse") else faith}, arm_id="arm", model_id="m1",
        seconds=change.get("seconds", 1.0) * 3)
    return [explain, train] if change.get("reverse") else [train, explain]


def _build(path: Path, **change: Any) -> Path:
    w = StoreWriter.open(path)
    w.set_meta({"preset": "tiny", "created_at": change.get("created_at", "2026-01-01T00:00:00+00:00")})
    for unit in _units(**change):
        w.commit(unit)
    w.publish()
    w.close(remove_work=True)
    return path


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    return _build(tmp_path / "ref" / "study.duckdb")


def test_same_content_in_another_order_at_other_times_has_the_same_fingerprint(reference: Path,
                                                                               tmp_path: Path) -> None:
    other = _build(tmp_path / "other" / "study.duckdb", reverse=True, seconds=9.0, latency=7.75, cpu="arm64",
                   data_root="/mnt/elsewhere", created_at="2027-05-05T12:00:00+00:00")
    con = duckdb.connect(str(other), read_only=True)
    try:  # the stores really differ in what is left out
        created = con.execute("SELECT value FROM meta WHERE key = 'created_at'").fetchone()
        assert created == ("2027-05-05T12:00:00+00:00",)
        assert con.execute("SELECT seconds FROM units WHERE kind = 'train'").fetchone() == (9.0,)
        assert con.execute("SELECT latency_cpu_ms FROM models WHERE model_id = 'm1'").fetchone() == (7.75,)
    finally:
        con.close()
    assert store_fingerprint(other) == store_fingerprint(reference)


@pytest.mark.parametrize(("change", "table"), [
    ({"score": math.nextafter(3.25, math.inf)}, "faithfulness"),  # a float by 1 ulp
    ({"curve": [1.0, math.nextafter(0.4, 0.0), 0.1]}, "faithfulness"),  # a list element by 1 ulp
    ({"blob": IMAGE[:57] + bytes([IMAGE[57] ^ 1]) + IMAGE[58:]}, "images"),  # one bit of one blob byte
    ({"fill": "fixed"}, "faithfulness"),  # one JSON value
])
def test_one_changed_value_changes_its_table_and_the_store_hash(reference: Path, tmp_path: Path,
                                                                change: dict[str, Any], table: str) -> None:
    ref = store_fingerprint(reference)
    got = store_fingerprint(_build(tmp_path / "changed.duckdb", **change))
    assert {t for t in ref if got[t] != ref[t]} == {table, "store"}


def test_every_nan_is_hashed_as_one_value_and_signed_zeros_differ() -> None:
    other_nan = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000123))[0]
    assert math.isnan(other_nan)
    assert encode_value(other_nan) == encode_value(math.nan)
    assert encode_value(-0.0) != encode_value(0.0)
    assert encode_value(1) != encode_value(1.0) != encode_value("1")


def test_cli_prints_a_line_per_table_and_the_store_hash(reference: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fp = store_fingerprint(reference)
    assert main(["fingerprint", str(reference)]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [t for t, *_ in lines] == [*TABLES, "store"]
    assert {t: h for t, *_, h in lines} == fp
    counts = {t: int(n) for t, n, _ in lines[:-1]}
    assert (counts["models"], counts["faithfulness"], counts["images"], counts["units"]) == (2, 3, 1, 2)
    assert main(["fingerprint", str(reference), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["store"] == fp["store"]
    assert {t: v["sha256"] for t, v in out["tables"].items()} == {t: fp[t] for t in TABLES}


def test_cli_exits_2_on_a_missing_file_without_creating_it(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none" / "study.duckdb"
    with caplog.at_level(logging.ERROR):
        assert main(["fingerprint", str(missing)]) == 2
    assert f"no study store at {missing}" in caplog.text
    assert capsys.readouterr().out == ""
    assert not missing.exists()
    assert not missing.parent.exists()


def test_cli_exits_2_on_a_file_that_is_not_a_store(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    with caplog.at_level(logging.ERROR):
        assert main(["fingerprint", str(text)]) == 2
        assert main(["fingerprint", str(empty)]) == 2
    assert "is not a readable DuckDB study store" in caplog.text
    assert f"{empty} is not a study store (missing tables: meta" in caplog.text
    assert text.read_text() == "not a database\n"
