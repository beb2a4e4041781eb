"""Statistics of paired faithfulness scores (decisions D24-D25): see ``mtlx_core.stats.paired``."""

from mtlx_core.stats.paired import PairedSummary, holm, paired_summary

__all__ = ["PairedSummary", "holm", "paired_summary"]
