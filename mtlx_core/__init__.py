"""mtlx: faithfulness of feature attributions in pruned multi-task vision networks."""

from mtlx_core.version import __version__, code_version

__all__ = ["__version__", "code_version"]
