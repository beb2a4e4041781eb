"""``python -m mtlx_core.store fingerprint S [--json]``: a content fingerprint of a study store.

Prints one line per table, ``table rows sha256``, and a last line ``store sha256``; two stores that computed
the same thing print the same lines whatever the order their units were written in (timings, measured
latencies, paths and code versions left out: ``mtlx_core.store.fingerprint``). ``--json`` prints
``{"tables": {table: {"rows": n, "sha256": h}}, "store": h}``. Exit status 2 when the path is not a readable
study store (nothing is created).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mtlx_core.store.errors import StoreError
from mtlx_core.store.fingerprint import combine, table_fingerprints

logger = logging.getLogger("mtlx_core.store")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mtlx_core.store", description="Tools for the study store.")
    sub = parser.add_subparsers(dest="command", required=True)
    fp = sub.add_parser("fingerprint", help="hash every table's rows in a fixed order, without timings",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fp.add_argument("store", type=Path, help="the study store (a DuckDB file)")
    fp.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    return parser


def _fingerprint(store: Path, as_json: bool) -> int:
    try:
        tables = table_fingerprints(store)
    except StoreError as exc:
        logger.error("%s", exc)
        return 2
    total = combine(tables)
    if as_json:
        out = {"tables": {t.table: {"rows": t.rows, "sha256": t.sha256} for t in tables}, "store": total}
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
    else:
        sys.stdout.write("".join(f"{t.table} {t.rows} {t.sha256}\n" for t in tables) + f"store {total}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "fingerprint":
        return _fingerprint(args.store, args.json)
    return 2  # unreachable: argparse requires a known command


if __name__ == "__main__":
    sys.exit(main())
