"""A task registered by a plugin reaches the store and the app without editing ``mtlx_core`` or the pages: its
predictions are stored in the task's own form (``Task.stored_prediction``) and the app names and draws it from
what the store recorded (``query.task_info``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _apptest import figures, run_page
from test_plugins import plugin_dir  # noqa: F401  (fixture: a folder for plug_* modules, forgotten afterwards)

from mtlx_core.audit.__main__ import main as audit_main
from mtlx_core.data.layout import get_dataset_spec
from mtlx_core.data.synth import generate_synth
from mtlx_core.store import query
from mtlx_core.store.codec import decode_array
from mtlx_core.store.reader import open_store
from mtlx_core.store.snapshot import open_readonly
from mtlx_core.tasks import build_tasks

PLUGIN = '''
import numpy as np
import torch

from mtlx_core.plugins import register_task
from test_plugins import EdgeTask, register_tiny


class ShownEdges(EdgeTask):
    display_name = "Edge map"
    display_kind = "scalar"

    def stored_prediction(self, pred):
        return torch.sigmoid(pred[0].detach().float()).numpy().astype(np.float16)  # probabilities, not logits


register_task("edges", lambda spec: ShownEdges())
register_tiny()
'''


pytestmark = pytest.mark.usefixtures("plugin_registry")  # tests/conftest.py


def test_builtin_tasks_describe_themselves_as_the_read_path_assumes_for_older_stores() -> None:
    tasks = build_tasks(get_dataset_spec("nyuv2"), ["segmentation", "depth", "normals"])
    assert {n: t.describe() for n, t in tasks.items()} == query.BUILTIN_TASKS


def test_a_plugin_task_is_stored_in_its_own_form_and_named_and_drawn_by_the_app(
        tmp_path: Path, plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    (plugin_dir / "plug_edges.py").write_text(PLUGIN)
    data = tmp_path / "data"
    generate_synth(data, n_train=4, n_val=3, height=32, width=64, seed=0, progress=False)
    import plug_edges  # noqa: F401
    from test_plugins import TinyNet

    torch.manual_seed(0)
    net = TinyNet({"edges": 1, "depth": 1}, hidden=8)
    torch.save(net.state_dict(), tmp_path / "dense.pt")
    with torch.no_grad():  # half of every conv's weights zeroed: an unstructurally pruned checkpoint
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight[m.weight.abs() <= m.weight.abs().median()] = 0
    torch.save(net.state_dict(), tmp_path / "pruned.pt")
    store = tmp_path / "edges.duckdb"
    rc = audit_main(["--plugin", "plug_edges", "--model", "tiny", "--data", str(data), "--dataset", "synth",
                     "--tasks", "edges,depth", "--dense", str(tmp_path / "dense.pt"), "--pruned",
                     str(tmp_path / "pruned.pt"), "--store", str(store), "--images", "2", "--no-progress",
                     "--threads", "1", "--model-arg", "hidden=8"])
    assert rc == 0

    con = open_readonly(store)
    try:
        meta = json.loads(con.execute("SELECT value FROM meta WHERE key = 'tasks'").fetchone()[0])
        blobs = [b for (b,) in con.execute("SELECT prediction FROM predictions WHERE task = 'edges'").fetchall()]
    finally:
        con.close()
    assert meta["edges"] == {"label": "Edge map", "display": "scalar", "primary_metric": "edge_acc"}
    assert meta["depth"] == query.BUILTIN_TASKS["depth"]
    stored = [decode_array(b) for b in blobs]
    assert stored
    assert all(a.shape == (32, 64) and a.dtype == np.float16 and a.min() >= 0 and a.max() <= 1 for a in stored)
    assert query.task_info(open_store(store))["edges"]["label"] == "Edge map"

    monkeypatch.setenv("MTLX_STORE", str(store))
    at = run_page("pages/compare.py", timeout=120)
    task_box = next(s for s in at.selectbox if s.label == "Task")
    assert task_box.options == ["Depth", "Edge map"]
    task_box.set_value("edges").run()
    assert not at.exception, [e.value for e in at.exception]
    hovers = [t.get("hovertemplate", "") for f in figures(at) for t in f["data"]]
    assert any(h.startswith("edge map ") for h in hovers)
