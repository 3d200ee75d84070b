"""Every built-in optimizer callback in one import: the stat callbacks and the step callbacks.

Stat callbacks (`stats.py`) keep running statistics, step callbacks (`steps.py`) move weights.
Each is called as `cb(p, **{**state, **hypers})` and returns None or a dict of new state;
`cb.defaults` holds the default hyper-parameters it brings to an optimizer and `cb.foreach` its
multi-tensor form.
"""

from __future__ import annotations

from .stats import average_grad, average_sqr_grad, larc_layer_lr, step_stat
from .steps import (
    adam_step,
    debias,
    l2_reg,
    lamb_step,
    larc_step,
    momentum_step,
    qhadam_step,
    radam_step,
    rms_prop_step,
    sgd_step,
    weight_decay,
)

__all__ = [
    "sgd_step",
    "weight_decay",
    "l2_reg",
    "average_grad",
    "average_sqr_grad",
    "momentum_step",
    "rms_prop_step",
    "step_stat",
    "debias",
    "adam_step",
    "radam_step",
    "qhadam_step",
    "larc_layer_lr",
    "larc_step",
    "lamb_step",
]
