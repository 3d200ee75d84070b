"""What the optimizer accepts: the range of every built-in hyper-parameter, and which parameters
it can update. Everything here only checks and raises; nothing changes state.

The ranges are the published ones: torch.optim's checks for the names it shares (`lr`, `eps`,
weight decay >= 0; `betas` in [0, 1)), QHAdam's nu in [0, 1] (Ma & Yarats 2018), LARS/LARC's
trust coefficient > 0 (You et al. 2017), RAdam's softplus `beta` >= 0 (0 turns it off).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

__all__ = ["Interval", "HYPER_RANGES", "check_hyper", "check_flag", "check_params"]


@dataclass(frozen=True)
class Interval:
    """A range of real numbers; `high=math.inf` means unbounded above."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = True

    def __contains__(self, x: float) -> bool:
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


_MOMENTUM = Interval(0.0, 1.0, high_open=True)
_NON_NEGATIVE = Interval(0.0)

# Hyper-parameters of the built-in callbacks; a name not listed here (a user callback's own) is
# not range-checked, since only its callback knows what it means.
HYPER_RANGES: dict[str, Interval] = {
    "lr": _NON_NEGATIVE,
    "mom": _MOMENTUM,
    "sqr_mom": _MOMENTUM,
    "eps": _NON_NEGATIVE,
    "wd": _NON_NEGATIVE,
    "beta": _NON_NEGATIVE,
    "nu_1": Interval(0.0, 1.0, high_open=False),
    "nu_2": Interval(0.0, 1.0, high_open=False),
    "trust_coeff": Interval(0.0, low_open=True),
}


def _real_value(name: str, value: Any, where: str) -> float:
    """`value` as a float if it is one real number: int, float, numpy scalar or a one-element
    floating tensor (torch takes tensor learning rates); bools, strings and complex refused."""
    if type(value) is float:  # the common case first: schedules set floats every step
        return value
    if isinstance(value, Tensor):
        if value.numel() != 1 or not value.is_floating_point():
            raise TypeError(
                f"{name}{where} must be a real number; as a tensor it must hold one "
                f"floating-point value, got shape {tuple(value.shape)} and dtype {value.dtype}"
            )
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name}{where} must be a real number (int, float or a one-element float tensor), "
            f"got {type(value).__name__} {value!r}"
        )
    return float(value)


def check_hyper(name: str, value: Any, where: str = "") -> None:
    """Raise when `value` is not an allowed value of the built-in hyper-parameter `name`.

    TypeError for something that is not one real number, ValueError for a value out of range or
    not finite. `where` (e.g. " (parameter group 2)") is added after the name in the message.
    """
    allowed = HYPER_RANGES.get(name)
    if allowed is None:
        return
    x = _real_value(name, value, where)
    if not (math.isfinite(x) and x in allowed):
        raise ValueError(f"{name}{where} must be a finite number {allowed}, got {value!r}")


def check_flag(name: str, value: Any) -> None:
    """Raise a TypeError unless `value` is a bool (a recipe's switch such as `decouple_wd`)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")


def check_params(
    params: Iterable[Tensor],
    group_index: int,
    names: Iterable[str] | None = None,
    allow_complex: bool = False,
) -> None:
    """Raise a TypeError for a parameter the optimizer cannot update: one that is not floating
    point (integers, bools), or complex when the pipeline's math is not defined on complex."""
    names = list(names) if names is not None else None
    for i, p in enumerate(params):
        if p.is_floating_point() or (allow_complex and p.is_complex()):
            continue
        label = f"parameter {i} of parameter group {group_index}"
        if names is not None and i < len(names):
            label += f" ({names[i]!r})"
        label += f", of shape {tuple(p.shape)} and dtype {p.dtype},"
        if p.is_complex():
            raise TypeError(
                f"{label} is complex, and this optimizer's statistics are not defined on complex "
                "numbers (torch.optim.Adam views them as pairs of reals; this pipeline does not). "
                "Keep the parameter as a real tensor of pairs (torch.view_as_real) and view it as "
                "complex in forward, or use a pipeline that allows complex parameters (SGD)"
            )
        raise TypeError(
            f"{label} is not floating point: an optimizer can only update floating-point "
            "parameters; convert it (e.g. .float()) or leave it out of the optimizer"
        )
