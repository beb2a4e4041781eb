"""The study's report: ``python -m mtlx_core.report --store S --out DIR [--format md|csv|parquet]``.

``write_report(store, out, fmt)`` computes the verdict (``mtlx_core.store.verdict``) and writes its tables,
figures and manifest into ``out`` atomically (``mtlx_core.report.build``).
"""

from mtlx_core.report.build import FORMATS, PER_IMAGE_COLUMNS, ReportResult, write_report

__all__ = ["FORMATS", "PER_IMAGE_COLUMNS", "ReportResult", "write_report"]
