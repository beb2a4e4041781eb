"""The smoke study store the app's tests read: built once per test process by the real precompute.

``smoke_store_path()`` runs ``python -m mtlx_core.precompute --preset smoke`` into a temporary folder (store, run
folders and the preset's synthetic data all land there, removed when the process exits; about a minute on 2 CPU
cores) and returns the store.
``MTLX_TEST_STORE=/path/study.duckdb`` reuses an existing smoke store instead (its run folders must be where its
``models.checkpoint`` column says).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_built: dict[str, Path] = {}


def build_smoke_store(root: Path) -> Path:
    """``root/study.duckdb`` from the real precompute (run folders in ``root``); the command's log on failure."""
    store = root / "study.duckdb"
    cmd = [sys.executable, "-m", "mtlx_core.precompute", "--preset", "smoke", "--store", str(store),
           "--models-dir", str(root), "--threads", "1", "--no-progress"]
    # cwd = root: the preset's relative data folder (data_cache/...) lands in the temporary folder
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=1200, check=False)
    if proc.returncode != 0 or not store.is_file():
        raise RuntimeError(f"{' '.join(cmd)} failed with code {proc.returncode}:\n{proc.stderr[-3000:]}")
    return store


def smoke_store_path() -> Path:
    """The smoke store of this test process (built on first use)."""
    if os.environ.get("MTLX_TEST_STORE"):
        return Path(os.environ["MTLX_TEST_STORE"])
    if "store" not in _built:
        root = Path(tempfile.mkdtemp(prefix="mtlx_app_store_"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _built["store"] = build_smoke_store(root)
    return _built["store"]
