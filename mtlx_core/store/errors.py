"""Errors a reader of the study store can meet (the app imports these; no DuckDB needed to import them).

- :class:`StoreMissingError`: no store file at the path; the message says how to build one.
- :class:`StoreBusyError`: the file is locked by a writer (a precompute writing directly into it); the
  message says "store is being written" and what to do. Readers should normally open the published snapshot
  (``study.duckdb``), which precompute replaces atomically and never holds open, so this is rare.

Both derive from :class:`StoreError` (a ``RuntimeError``) so a caller can catch them together.
"""

from __future__ import annotations

BUILD_HINT = "build it with: python -m mtlx_core.precompute --preset demo  (or --preset smoke for a tiny one)"


class StoreError(RuntimeError):
    """Base class of the study store's reader errors."""


class StoreMissingError(StoreError, FileNotFoundError):
    """No study store at the given path."""

    def __init__(self, path: str, hint: str = BUILD_HINT) -> None:
        self.path = str(path)
        super().__init__(f"no study store at {self.path}; {hint}")


class StoreBusyError(StoreError):
    """The store file is locked by a writing process."""

    def __init__(self, path: str, detail: str = "") -> None:
        self.path = str(path)
        msg = (
            f"store is being written: {self.path} is locked by a running precompute; "
            "try again in a moment (precompute publishes a readable snapshot after each finished arm)"
        )
        if detail:
            msg += f" [{detail}]"
        super().__init__(msg)
