"""``manifest.json`` of a report: what produced it (code and package versions, the store, its checkpoints, presets
and settings, the verdict's settings) and a SHA-256 of every file written beside it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from importlib import metadata
from pathlib import Path
from typing import Any

from mtlx_core.store import query
from mtlx_core.store.verdict import StudyVerdict
from mtlx_core.version import code_version

logger = logging.getLogger(__name__)

PACKAGES: tuple[str, ...] = ("mtlx", "numpy", "scipy", "statsmodels", "pandas", "duckdb", "pyarrow", "matplotlib",
                             "torch", "streamlit", "plotly")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build(store: query.Store, v: StudyVerdict, fmt: str, folder: Path, files: list[str],
          notes: list[str]) -> dict[str, Any]:
    meta = query.overview(store)["meta"]
    settings: Any = meta.get("settings")
    try:
        settings = json.loads(settings) if settings else None
    except json.JSONDecodeError:
        logger.warning("the store's meta settings are not JSON; recorded as text")
    ckpt = store.df("SELECT model_id, checkpoint_sha256, seed, code_version FROM models ORDER BY model_id")
    return {
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "packages": package_versions(),
        "store": {"path": str(store.path), "signature": store.signature, "preset": meta.get("preset"),
                  "schema_version": meta.get("schema_version"), "settings_key": meta.get("settings_key"),
                  "settings": settings, "code_version": meta.get("code_version"), "status": meta.get("status")},
        "checkpoints": {r.model_id: {"sha256": r.checkpoint_sha256, "seed": None if r.seed != r.seed else int(r.seed),
                                     "code_version": r.code_version} for r in ckpt.itertuples(index=False)},
        "verdict_settings": v.settings,
        "metrics": [{"metric": m, "variant": var, "label": lab} for m, var, lab in v.labels],
        "format": fmt,
        "notes": notes,
        "files": {name: _sha256(folder / name) for name in files},
    }


def write(path: Path, store: query.Store, v: StudyVerdict, fmt: str, files: list[str], notes: list[str]) -> None:
    data = build(store, v, fmt, path.parent, files, notes)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
