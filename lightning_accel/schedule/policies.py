"""The chapter's training policies as schedule factories: 1cycle, flat-then-cosine, SGDR, constant.

Each policy checks its arguments when built (so bad input fails before any training), and when
called with the optimizer's hyper-parameters at the start of a fit returns the schedules to run.
A learning rate left as `None` means "the optimizer's own, per group", so discriminative learning
rates keep their ratios.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..module import AccelModule
from ..optim.optimizer import spread
from .functions import SchedCos, SchedNo, combine_scheds, combined_cos

__all__ = ["OneCyclePolicy", "FlatCosPolicy", "SGDRPolicy", "ConstantPolicy", "DEFAULT_MOMS"]

DEFAULT_MOMS = (0.95, 0.85, 0.95)


def _check_positive(value: Any, arg: str) -> None:
    """`value` is a positive number, a sequence of them, or a slice of them (discriminative)."""
    if value is None:
        return
    if isinstance(value, slice):
        items = [v for v in (value.start, value.stop) if v is not None]
        if value.stop is None or value.step is not None:
            raise ValueError(f"{arg} as a slice must be slice(stop) or slice(start, stop)")
    elif isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, str):
        items = list(np.asarray(value, dtype=np.float64).reshape(-1))
        if not items:
            raise ValueError(f"{arg} must not be empty")
    else:
        items = [value]
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
            raise TypeError(f"{arg} must be a positive number, got {v!r}")
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{arg} must be a positive number, got {v!r}")


def _check_pct(pct: Any, arg: str) -> None:
    if isinstance(pct, bool) or not isinstance(pct, (int, float, np.number)):
        raise TypeError(f"{arg} must be a number in (0, 1), got {pct!r}")
    if not 0 < pct < 1:
        raise ValueError(f"{arg} must be in (0, 1) (exclusive), got {pct!r}")


def _module_moms(module: Any) -> Sequence[float] | None:
    """An `AccelModule`'s own `moms`, the default of its 1cycle momentum schedule."""
    return module.moms if isinstance(module, AccelModule) else None


def _check_moms(moms: Any) -> None:
    if moms is None:
        return
    if (
        not isinstance(moms, (tuple, list))
        or len(moms) != 3
        or any(isinstance(m, bool) or not isinstance(m, (int, float, np.number)) for m in moms)
    ):
        raise ValueError(f"moms must be 3 numbers (start, middle, end), got {moms!r}")


def _per_group(value: Any, start_hypers: list[dict], name: str = "lr") -> np.ndarray:
    """`value` (or, if None, the optimizer's own `name`) as one float per parameter group."""
    if value is None:
        return np.array([float(h[name]) for h in start_hypers], dtype=np.float64)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return np.array(spread(value, len(start_hypers)), dtype=np.float64)


def _maybe_scalar(arr: np.ndarray) -> Any:
    return float(arr[0]) if np.all(arr == arr[0]) else arr


@dataclass(kw_only=True)
class _Policy:
    wd: float | None = None

    def _with_wd(self, scheds: dict[str, Any]) -> dict[str, Any]:
        if self.wd is not None:
            scheds["wd"] = SchedNo(self.wd)
        return scheds


@dataclass(kw_only=True)
class OneCyclePolicy(_Policy):
    """Learning rate warms from `lr_max/div` to `lr_max` over `pct_start`, then anneals to
    `lr_max/div_final` (cosine both ways); momentum moves the opposite way through `moms`."""

    lr_max: Any = None
    div: float = 25.0
    div_final: float = 1e5
    pct_start: float = 0.25
    moms: Sequence[float] | None = None

    def __post_init__(self) -> None:
        _check_positive(self.lr_max, "lr_max")
        _check_positive(self.div, "div")
        _check_positive(self.div_final, "div_final")
        _check_pct(self.pct_start, "pct_start")
        _check_moms(self.moms)
        if self.wd is not None:
            _check_nonnegative(self.wd, "wd")

    def __call__(self, start_hypers: list[dict], module: Any = None) -> dict[str, Any]:
        lr_max = _maybe_scalar(_per_group(self.lr_max, start_hypers))
        scheds: dict[str, Any] = {
            "lr": combined_cos(self.pct_start, lr_max / self.div, lr_max, lr_max / self.div_final)
        }
        # Momentum is scheduled where the optimizer has one: the chapter's plain `sgd_cb`
        # optimizer has none, and `fit_one_cycle(..., moms=(0, 0, 0))` must still run on it.
        if "mom" in start_hypers[0]:
            moms = self.moms or _module_moms(module) or DEFAULT_MOMS
            _check_moms(tuple(moms))
            scheds["mom"] = combined_cos(self.pct_start, *moms)
        return self._with_wd(scheds)


@dataclass(kw_only=True)
class FlatCosPolicy(_Policy):
    """Flat learning rate `lr` for `pct_start` of training, then cosine annealing to
    `lr/div_final`."""

    lr: Any = None
    div_final: float = 1e5
    pct_start: float = 0.75

    def __post_init__(self) -> None:
        _check_positive(self.lr, "lr")
        _check_positive(self.div_final, "div_final")
        _check_pct(self.pct_start, "pct_start")
        if self.wd is not None:
            _check_nonnegative(self.wd, "wd")

    def __call__(self, start_hypers: list[dict], module: Any = None) -> dict[str, Any]:
        lr = _maybe_scalar(_per_group(self.lr, start_hypers))
        return self._with_wd({"lr": combined_cos(self.pct_start, lr, lr, lr / self.div_final)})


@dataclass(kw_only=True)
class SGDRPolicy(_Policy):
    """`n_cycles` cosine cycles from `lr_max` to 0, the first `cycle_len` epochs long, each next
    one `cycle_mult` times longer (warm restarts)."""

    n_cycles: int = 1
    cycle_len: int = 1
    lr_max: Any = None
    cycle_mult: int = 2

    def __post_init__(self) -> None:
        for arg in ("n_cycles", "cycle_len", "cycle_mult"):
            value = getattr(self, arg)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        _check_positive(self.lr_max, "lr_max")
        if self.wd is not None:
            _check_nonnegative(self.wd, "wd")

    @property
    def cycle_epochs(self) -> list[int]:
        """Epochs of each cycle."""
        return [self.cycle_len * self.cycle_mult**i for i in range(self.n_cycles)]

    @property
    def n_epoch(self) -> int:
        """Total epochs: the sum of the cycles."""
        return sum(self.cycle_epochs)

    def __call__(self, start_hypers: list[dict], module: Any = None) -> dict[str, Any]:
        lr_max = _maybe_scalar(_per_group(self.lr_max, start_hypers))
        pcts = [e / self.n_epoch for e in self.cycle_epochs]
        cycles = [SchedCos(lr_max, 0 * lr_max) for _ in pcts]
        return self._with_wd({"lr": combine_scheds(pcts, cycles)})


@dataclass(kw_only=True)
class ConstantPolicy(_Policy):
    """A fixed learning rate (plain `fit`); `lr=None` leaves the optimizer's own."""

    lr: Any = None

    def __post_init__(self) -> None:
        _check_positive(self.lr, "lr")
        if self.wd is not None:
            _check_nonnegative(self.wd, "wd")

    def __call__(self, start_hypers: list[dict], module: Any = None) -> dict[str, Any]:
        scheds: dict[str, Any] = {}
        if self.lr is not None:
            scheds["lr"] = SchedNo(_maybe_scalar(_per_group(self.lr, start_hypers)))
        return self._with_wd(scheds)


def _check_nonnegative(value: Any, arg: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{arg} must be a number >= 0, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{arg} must be a number >= 0, got {value!r}")
