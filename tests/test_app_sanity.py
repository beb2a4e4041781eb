"""The Sanity page under AppTest on the smoke store, and the smoke store's sanity rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from _app_store import smoke_store_path
from streamlit.testing.v1 import AppTest

from mtlx_core.precompute.presets import get_study_preset
from mtlx_core.store import query

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "pages/sanity.py"


@pytest.fixture
def store_env(monkeypatch: pytest.MonkeyPatch) -> Path:
    path = smoke_store_path()
    monkeypatch.setenv("MTLX_STORE", str(path))
    return path


def test_the_smoke_store_has_every_check_for_each_dense_model(store_env: Path) -> None:
    store = query.open_store(store_env)
    preset = get_study_preset("smoke")
    assert preset.sanity is not None
    dense = {r[0] for r in store.rows("SELECT dense_model_id FROM arms")}
    assert len(dense) == len(preset.arms)
    got = store.rows("SELECT model_id, explainer, check_name, count(DISTINCT task) FROM sanity GROUP BY ALL")
    checks = {"model_randomisation", "head_randomisation", "random_target", "noise_floor"}
    for model_id in dense:
        tasks = {r[0] for r in store.rows("SELECT unnest(tasks) FROM models WHERE model_id = ?", [model_id])}
        for explainer in preset.explain.explainers:
            mine = {(c, n) for m, e, c, n in got if m == model_id and e == explainer}
            assert mine == {(c, len(tasks)) for c in checks}, (model_id, explainer, mine)
    steps = store.rows("SELECT max(step) FROM sanity WHERE check_name = 'model_randomisation' GROUP BY model_id, task")
    assert all(1 <= s <= preset.sanity.max_steps for (s,) in steps)


def test_sanity_page_shows_the_summary_for_every_explainer_and_the_checks_of_the_first_model(
        store_env: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Sanity checks: do the explanations depend on the model?"
    summary = query.sanity_summary(query.open_store(store_env))
    lines = [m.value for m in at.markdown if m.value.startswith("- **")]
    assert len(lines) == summary["explainer"].nunique()
    assert "Grad-CAM" in lines[0]
    assert "dense models" in lines[0]
    n_models = summary["model_id"].nunique()
    assert f"of {n_models} dense models" in lines[0]
    assert at.selectbox(key="sn_model").value == summary["model_id"].iloc[0]
    assert len(at.get("plotly_chart")) == 1  # the randomisation curves
    assert [s.value for s in at.subheader] == [
        "Which explainers pass the checks on which models",
        "Model randomisation: similarity to the original maps per cascade step",
        "Head randomisation: one task's head re-initialised",
        "Random target and noise floor"]
    ref = query.sanity_reference(query.open_store(store_env), summary["model_id"].iloc[0],
                                 at.selectbox(key="sn_explainer").value)
    assert len(at.metric) == len(ref) == 2 * ref["task"].nunique()  # random target and noise floor per task
