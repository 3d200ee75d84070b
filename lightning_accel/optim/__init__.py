"""The composable optimizer: AccelOptimizer, stat and step callbacks, recipes, executors."""

from .callbacks import *  # noqa: F403
from .callbacks import __all__ as _callbacks_all
from .lookahead import Lookahead
from .optimizer import AccelOptimizer
from .recipes import SGD, Adam, Lamb, Larc, QHAdam, RAdam, RMSProp, ranger
from .tensor_lists import multi_tensor_form, whole_norms

__all__: list[str] = [
    "AccelOptimizer",
    *_callbacks_all,
    "SGD",
    "RMSProp",
    "Adam",
    "RAdam",
    "QHAdam",
    "Larc",
    "Lamb",
    "Lookahead",
    "ranger",
    "multi_tensor_form",
    "whole_norms",
]
