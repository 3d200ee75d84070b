"""Schedule functions: the value of a hyper-parameter as a function of the training position.

A schedule maps the position `pct` in [0, 1] to a value: a float, or a numpy array with one value
per parameter group (discriminative learning rates). Schedules are small dataclasses rather than
closures so that they pickle (checkpoints, DDP spawn) and print readably.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Schedule",
    "SchedLin",
    "SchedCos",
    "SchedNo",
    "SchedExp",
    "SchedPoly",
    "CombinedSchedule",
    "combine_scheds",
    "combined_cos",
]

Value = float | np.ndarray


def _as_value(x: Any, arg: str) -> Value:
    """A float, or a float64 array for per-group values given as a list, tuple or array."""
    if isinstance(x, (list, tuple, np.ndarray)):
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"{arg} must be a number or a non-empty 1-d sequence, got {x!r}")
        return arr
    if isinstance(x, bool) or not isinstance(x, (int, float, np.number)):
        raise TypeError(f"{arg} must be a number or a sequence of numbers, got {x!r}")
    return float(x)


def _out(v: Value) -> Value:
    return v if isinstance(v, np.ndarray) and v.ndim else float(v)


class Schedule:
    """Base of the schedule functions: `sched(pct) -> value`."""

    def __call__(self, pct: float) -> Value:
        raise NotImplementedError


@dataclass(eq=False)
class _Annealer(Schedule):
    start: Value
    end: Value

    def __post_init__(self) -> None:
        self.start = _as_value(self.start, "start")
        self.end = _as_value(self.end, "end")


class SchedLin(_Annealer):
    """Linear from `start` to `end`: `start + pct * (end - start)`."""

    def __call__(self, pct: float) -> Value:
        return _out(self.start + pct * (self.end - self.start))


class SchedCos(_Annealer):
    """Cosine from `start` to `end`: `start + (1 + cos(pi * (1 - pct))) * (end - start) / 2`."""

    def __call__(self, pct: float) -> Value:
        return _out(self.start + (1 + math.cos(math.pi * (1 - pct))) * (self.end - self.start) / 2)


class SchedNo(_Annealer):
    """Constant at `start` (`end` is accepted for a uniform signature and ignored)."""

    def __init__(self, start: Value, end: Value | None = None) -> None:
        super().__init__(start, start if end is None else end)

    def __call__(self, pct: float) -> Value:
        return _out(self.start)


class SchedExp(_Annealer):
    """Exponential from `start` to `end`: `start * (end / start) ** pct`."""

    def __post_init__(self) -> None:
        super().__post_init__()
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.asarray(self.end) / np.asarray(self.start)
        # A zero or sign-changing ratio has no real power: refuse rather than produce nan.
        if not np.all(np.isfinite(ratio)) or np.any(ratio <= 0):
            raise ValueError(
                "SchedExp needs start and end non-zero and of the same sign, "
                f"got start={self.start!r}, end={self.end!r}"
            )

    def __call__(self, pct: float) -> Value:
        return _out(self.start * (self.end / self.start) ** pct)


@dataclass(eq=False)
class SchedPoly(Schedule):
    """Polynomial of degree `power` from `start` to `end`: `start + (end - start) * pct**power`."""

    start: Value
    end: Value
    power: float

    def __post_init__(self) -> None:
        self.start = _as_value(self.start, "start")
        self.end = _as_value(self.end, "end")
        self.power = float(_as_value(self.power, "power"))

    def __call__(self, pct: float) -> Value:
        return _out(self.start + (self.end - self.start) * pct**self.power)


@dataclass(eq=False)
class CombinedSchedule(Schedule):
    """`scheds[i]` runs over the fraction `pcts[i]` of training, each seeing its own 0 -> 1."""

    pcts: Sequence[float]
    scheds: Sequence[Callable[[float], Value]]
    _starts: list[float] = field(init=False, repr=False)
    _widths: list[float] = field(init=False, repr=False)
    _active: list[Callable[[float], Value]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.pcts = [float(p) for p in self.pcts]
        self.scheds = list(self.scheds)
        if len(self.pcts) != len(self.scheds) or not self.pcts:
            raise ValueError(
                f"combine_scheds needs one fraction per schedule (at least one), "
                f"got {len(self.pcts)} pcts and {len(self.scheds)} scheds"
            )
        if any(not math.isfinite(p) or p < 0 for p in self.pcts):
            raise ValueError(f"combine_scheds pcts must be >= 0, got {self.pcts}")
        if not math.isclose(sum(self.pcts), 1.0, rel_tol=0, abs_tol=1e-6):
            raise ValueError(
                f"combine_scheds pcts must sum to 1, got {self.pcts} (sum {sum(self.pcts)})"
            )
        for s in self.scheds:
            if not callable(s):
                raise TypeError(f"combine_scheds scheds must be callables of pct, got {s!r}")
        # Zero-width phases never run (the reference also jumps past them): drop them up front.
        self._starts, self._widths, self._active = [], [], []
        start = 0.0
        for p, s in zip(self.pcts, self.scheds):
            if p > 0:
                self._starts.append(start)
                self._widths.append(p)
                self._active.append(s)
            start += p

    def __call__(self, pct: float) -> Value:
        i = min(max(bisect.bisect_right(self._starts, pct) - 1, 0), len(self._active) - 1)
        return self._active[i]((pct - self._starts[i]) / self._widths[i])


def combine_scheds(
    pcts: Sequence[float], scheds: Sequence[Callable[[float], Value]]
) -> CombinedSchedule:
    """Run `scheds` one after the other, `scheds[i]` over the fraction `pcts[i]` (summing to 1)."""
    return CombinedSchedule(pcts, scheds)


def combined_cos(pct: float, start: Value, middle: Value, end: Value) -> CombinedSchedule:
    """Cosine from `start` to `middle` over the first `pct` of training, then to `end`."""
    if not 0 <= pct <= 1:
        raise ValueError(f"combined_cos pct must be in [0, 1], got {pct!r}")
    return combine_scheds([pct, 1 - pct], [SchedCos(start, middle), SchedCos(middle, end)])
