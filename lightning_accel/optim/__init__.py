"""The composable optimizer: AccelOptimizer, stat and step callbacks, recipes, executors."""

from .callbacks import *  # noqa: F403
from .callbacks import __all__ as _callbacks_all
from .core import AccelOptimizer

__all__: list[str] = ["AccelOptimizer", *_callbacks_all]
