"""``python -m mtlx_core.demo`` (the README's first command): the app comes up while the store is being built."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb

from mtlx_core.store.snapshot import work_path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _status(store: Path) -> str | None:
    if not store.is_file():
        return None
    try:
        con = duckdb.connect(str(store), read_only=True)
    except duckdb.Error:
        return None
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'status'").fetchone()
    finally:
        con.close()
    return row[0] if row else None


def test_demo_serves_the_app_while_precompute_builds_the_store(tmp_path: Path) -> None:
    store, port = tmp_path / "study.duckdb", _free_port()
    cmd = [sys.executable, "-m", "mtlx_core.demo", "--preset", "smoke", "--store", str(store), "--models-dir",
           str(tmp_path), "--port", str(port), "--threads", "1"]
    log = (tmp_path / "demo.log").open("w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    served_while_building = False
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and _status(store) != "complete":
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
            if not served_while_building and _healthy(port):
                served_while_building = work_path(store).exists()
            time.sleep(0.5)
        assert _status(store) == "complete", (tmp_path / "demo.log").read_text()[-3000:]
        assert served_while_building
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and work_path(store).exists():
            time.sleep(0.5)
        assert not work_path(store).exists()  # precompute finished and cleaned up
        assert _healthy(port)  # the app stays up after the store is complete
    finally:
        proc.send_signal(signal.SIGTERM)  # not SIGINT: a shell's background job ignores it (so would Python)
        rc = proc.wait(timeout=90)
        log.close()
    assert rc == 143
    assert not _healthy(port)  # stopping the demo stopped the app too
