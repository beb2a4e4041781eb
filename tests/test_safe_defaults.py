"""Safe by default: the dashboard listens on this machine only, and the upload limit is one number."""

from __future__ import annotations

import tomllib
from pathlib import Path

from mtlx_core.demo import app_command, build_parser
from mtlx_core.uploads import MAX_BYTES, MAX_UPLOAD_MB

ROOT = Path(__file__).resolve().parents[1]


def option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_demo_app_listens_on_localhost_unless_a_host_is_given() -> None:
    assert build_parser().parse_args([]).host == "127.0.0.1"
    assert option(app_command(8501), "--server.address") == "127.0.0.1"
    assert option(app_command(8501, "0.0.0.0"), "--server.address") == "0.0.0.0"


def test_streamlit_run_from_the_repository_listens_on_localhost() -> None:
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"


def test_upload_limit_is_one_number_everywhere() -> None:
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["maxUploadSize"] == MAX_UPLOAD_MB
    assert option(app_command(8501), "--server.maxUploadSize") == str(MAX_UPLOAD_MB)
    assert MAX_BYTES == MAX_UPLOAD_MB * 2**20
    live = (ROOT / "pages" / "live.py").read_text()
    assert "max_upload_size=MAX_UPLOAD_MB" in live
    assert "at most {MAX_UPLOAD_MB} MiB" in live
