"""Which optimizer steps the monitor logs: spread over the planned run, or every n steps.

By default the monitor logs a fixed number of points per run whatever its length: `spread` picks
them evenly over the planned optimizer steps (`trainer.estimated_stepping_batches`), the first and
the last included. An explicit interval follows Lightning's own rhythm instead (the n-th, 2n-th,
... step, counted from 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def spread(points: int, total: int) -> frozenset[int]:
    """`points` step indices spread evenly over ``0 .. total - 1``, both ends included; every
    step when the run has no more steps than points."""
    if points < 1 or total < 1:
        return frozenset()
    if total <= points:
        return frozenset(range(total))
    if points == 1:
        return frozenset({total - 1})
    return frozenset(round(i * (total - 1) / (points - 1)) for i in range(points))


def planned_steps(trainer: Any) -> int | None:
    """The optimizer steps the fit plans to make, or None when Lightning cannot tell (an
    iterable loader without a length and no `max_steps`: Lightning then says -1 or inf)."""
    total = trainer.estimated_stepping_batches
    if isinstance(total, bool) or not isinstance(total, (int, float)):
        return None
    if not math.isfinite(total) or total < 1:
        return None
    return int(total)


@dataclass(frozen=True)
class Cadence:
    """A set of steps (`steps`, 0-based) plus, if `every` > 0, every `every`-th step."""

    steps: frozenset[int] = frozenset()
    every: int = 0

    def __contains__(self, step: int) -> bool:
        return step in self.steps or (self.every > 0 and (step + 1) % self.every == 0)

    def count(self, total: int) -> int:
        """How many of the steps ``0 .. total - 1`` it holds."""
        return sum(1 for step in range(total) if step in self)
