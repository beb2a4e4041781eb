"""The registration module of the example: importing it registers ``own_lraspp`` with mtlx.

mtlx imports it through the entry point of group ``mtlx.plugins`` (``pyproject.toml``) once the package is
installed, or with ``--plugin own_model`` / ``MTLX_PLUGINS=own_model`` when it is only on ``PYTHONPATH``.
"""

from __future__ import annotations

from mtlx_core.plugins import register_model
from own_model.net import TASKS, TwoTaskLRASPP, build

MODEL_NAME = "own_lraspp"

register_model(
    MODEL_NAME, build,
    explain_layer="encoder_high",  # the last shared layer: MobileNetV3's last conv (output stride 16)
    task_modules={t: (f"heads.{t}",) for t in TASKS},  # everything else (the backbone) is shared
    # input_multiple (default 1): LR-ASPP resizes its features itself, so any input size works
)

__all__ = ["MODEL_NAME", "TASKS", "TwoTaskLRASPP", "build"]
