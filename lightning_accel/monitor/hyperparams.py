"""Reading an optimizer's hyper-parameters and a run's settings as flat, loggable numbers."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

from ..optim.optimizer import callback_name


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool):
        return None  # flags such as torch's `foreach` or `nesterov` are not curves
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value)
    return None


def flat_scalars(values: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a mapping; a sequence such as ``betas`` gives ``betas.0``..."""
    out: dict[str, float] = {}
    for name, value in values.items():
        if name == "params":
            continue
        if isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                scalar = _scalar(item)
                if scalar is not None:
                    out[f"{name}.{i}"] = scalar
            continue
        scalar = _scalar(value)
        if scalar is not None:
            out[name] = scalar
    return out


def group_hypers(opt: Optimizer) -> list[dict[str, float]]:
    """Every hyper-parameter of every parameter group, as floats.

    AccelOptimizer says which entries are hyper-parameters (`hypers`); for any other optimizer,
    every numeric entry of a parameter group is one.
    """
    groups = getattr(opt, "hypers", None)
    if not isinstance(groups, (list, tuple)):
        groups = opt.param_groups
    return [flat_scalars(group) for group in groups]


def optimizer_label(opt: Optimizer) -> str:
    """A short name for the optimizer: its callbacks for AccelOptimizer, else its class."""
    cbs = getattr(opt, "cbs", None)
    if cbs:
        return "+".join(callback_name(cb) for cb in cbs)
    return type(opt).__name__


def hparam_value(value: Any) -> int | float | str | bool:
    """A value TensorBoard's HParams tab accepts; anything else is shown as its text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    scalar = _scalar(value)
    return scalar if scalar is not None else str(value)
