"""Training of multi-task models: presets, the loop, evaluation against trivial predictors."""

from mtlx_core.train.config import PRESETS, TrainConfig, get_preset, resolve_config
from mtlx_core.train.loop import TrainResult, train

__all__ = ["PRESETS", "TrainConfig", "TrainResult", "get_preset", "resolve_config", "train"]
