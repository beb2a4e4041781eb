"""``python -m mtlx_core.demo``: the main job on the embedded demo, then the app on its results.

Builds the demo study store (``python -m mtlx_core.precompute --preset demo``: the synthetic RGB-D rooms, the
three dense models of the study's Table 1 and their 13 pruned versions, Grad-CAM and IROF with baselines) in a
background process and starts the dashboard (``streamlit run app.py``) on that store at once. The app shows
what is ready: precompute publishes a snapshot after every arm and every two minutes. Resumable: run the same
command again after an interruption and precompute continues where it stopped (a complete store costs
nothing). ``--no-app`` only builds the store, in the foreground.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mtlx_core.plugins import ENV_VAR, add_plugin_argument, env_modules
from mtlx_core.precompute.__main__ import default_store
from mtlx_core.runs import DEFAULT_MODELS_DIR
from mtlx_core.store.snapshot import work_path
from mtlx_core.uploads import MAX_UPLOAD_MB

logger = logging.getLogger("mtlx_core.demo")

APP = Path(__file__).resolve().parents[1] / "app.py"
DEFAULT_HOST = "127.0.0.1"  # safe by default: only this machine reaches the dashboard


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mtlx_core.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, default=None, help="study store (default: $MTLX_STORE or "
                                                             "models_store/study.duckdb)")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR, help="run folders (default models_store)")
    p.add_argument("--port", type=int, default=8501, help="the app's port (default 8501)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="address the app listens on (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to "
                        "every network the machine is on, without authentication)")
    p.add_argument("--threads", type=int, help="torch CPU threads per precompute worker (default: 1 with several "
                                               "workers, else torch's)")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="precompute worker processes (default: 2 on a machine with at least 2 cores, else 1): "
                        "units run side by side (precompute --executor processes); 1 runs them one after the other "
                        "in one process")
    p.add_argument("--preset", default="demo", choices=("demo", "smoke"),
                   help="demo (default: the three arms of Table 1; measured on 2 CPU cores: 17 minutes with the "
                        "default 2 workers, the first arm after 4) or smoke (two tiny arms in a "
                        "minute)")
    p.add_argument("--no-app", action="store_true", help="only build the store, in the foreground")
    add_plugin_argument(p)  # passed on to precompute and the app
    return p


def default_workers() -> int:
    """Two worker processes where there are two cores: on the demo's small models two one-thread processes beat one
    two-thread process (``bench/precompute_scaling.py``)."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def precompute_argv(preset: str, store: Path, models_dir: Path, threads: int | None, workers: int = 1) -> list[str]:
    argv = ["--preset", preset, "--store", str(store), "--models-dir", str(models_dir)]
    if workers > 1:
        argv += ["--executor", "processes", "--workers", str(workers)]
    return argv + (["--threads", str(threads)] if threads else [])


def app_command(port: int, host: str = DEFAULT_HOST) -> list[str]:
    """``streamlit run app.py`` listening on ``host:port``, with the upload limit of ``mtlx_core.uploads``."""
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
            "--server.address", host, "--server.maxUploadSize", str(MAX_UPLOAD_MB),
            "--server.headless", "true", "--browser.gatherUsageStats", "false"]


def _wait_for_writer(store: Path, proc: subprocess.Popen, seconds: float = 60.0) -> None:
    """Until precompute has opened its work file (or published, or exited): the app then says "being written"
    rather than "no store"."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and proc.poll() is None and not (store.exists() or work_path(store).exists()):
        time.sleep(0.2)


def _stop(proc: subprocess.Popen | None, name: str) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    logger.info("stopped %s", name)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    store = (args.store or default_store()).resolve()
    models_dir = args.models_dir.resolve()
    if args.workers < 1:
        logger.error("--workers must be at least 1, got %d", args.workers)
        return 2
    pre_argv = precompute_argv(args.preset, store, models_dir, args.threads, args.workers)
    pre_argv += [a for m in args.plugin for a in ("--plugin", m)]
    if args.no_app:
        from mtlx_core.precompute.__main__ import main as precompute_main

        return precompute_main(pre_argv)
    if not APP.is_file():
        logger.error("the app (%s) is not next to the package: run the demo from a clone of the repository, or "
                     "use --no-app to build the store only", APP)
        return 2
    env = {**os.environ, "MTLX_STORE": str(store), "MTLX_MODELS_DIR": str(models_dir),
           ENV_VAR: ",".join(dict.fromkeys([*env_modules(), *args.plugin]))}
    pre = app = None
    terminated = []

    def on_sigterm(signum: int, frame: object) -> None:  # stop like Ctrl-C: children too, then exit 143
        terminated.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        pre = subprocess.Popen([sys.executable, "-m", "mtlx_core.precompute", *pre_argv], env=env)
        _wait_for_writer(store, pre)
        logger.info("precompute (pid %d) is building %s; the app starts on http://%s:%d and shows each arm "
                    "as soon as it is published (reload the page to see more)", pre.pid, store, args.host, args.port)
        if args.host not in (DEFAULT_HOST, "localhost", "::1"):
            logger.warning("the app listens on %s: anyone who can reach this machine on port %d can use it (no "
                           "authentication)", args.host, args.port)
        app = subprocess.Popen(app_command(args.port, args.host), env=env)
        while app.poll() is None:
            if pre is not None and pre.poll() is not None:
                if pre.returncode == 0:
                    logger.info("the demo store is complete: %s (the app stays up; Ctrl-C stops it)", store)
                else:
                    logger.error("precompute failed with exit code %d (its log is above); the app shows what was "
                                 "published. Run the same command again to resume.", pre.returncode)
                pre = None
            time.sleep(0.5)
        return app.returncode or 0
    except KeyboardInterrupt:
        if pre is not None and pre.poll() is None:
            logger.info("interrupted: run the same command again and precompute resumes where it stopped")
        return 143 if terminated else 130
    finally:
        _stop(pre, "precompute")
        _stop(app, "the app")


if __name__ == "__main__":
    sys.exit(main())
