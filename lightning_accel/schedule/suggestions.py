"""Learning-rate suggestions from an lr_find curve, with the reference's definitions.

Each function takes the recorded learning rates and (smoothed) losses, in increasing-lr order,
plus `num_it`, and returns `(suggested_lr, (lr, loss))`: the suggestion and the point on the
curve at that lr, to mark on the plot. The signature is the reference's, so custom suggestion
functions carry over.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["valley", "slide", "minimum", "steep", "SuggestionMethod"]

Point = tuple[float, float]


def _arrays(lrs: Any, losses: Any, need: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    def as_np(x: Any) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().double().numpy()
        return np.asarray(x, dtype=np.float64).reshape(-1)

    lrs, losses = as_np(lrs), as_np(losses)
    if len(lrs) != len(losses):
        raise ValueError(f"{name}: got {len(lrs)} lrs but {len(losses)} losses")
    if len(losses) < need:
        raise ValueError(
            f"{name} needs at least {need} recorded losses, got {len(losses)} "
            "(lr_find stopped too early: lower start_lr, raise num_it, or use stop_div=False)"
        )
    return lrs, losses


def valley(lrs: Sequence[float], losses: Sequence[float], num_it: int) -> tuple[float, Point]:
    """The lr about half-way along the longest valley: the longest strictly decreasing run of
    losses (not necessarily contiguous), at the reference's index `start + len/3 + len/6`."""
    lrs, losses = _arrays(lrs, losses, 1, "valley")
    n = len(losses)
    # run[i]: length of the longest strictly decreasing subsequence ending at i.
    run = np.ones(n, dtype=np.int64)
    for i in range(1, n):
        higher = losses[:i] > losses[i]
        if higher.any():
            run[i] = run[:i][higher].max() + 1
    end = int(np.argmax(run))  # the first longest run, as the reference
    start = end - int(run[end])  # the reference's start, one before the run's first point
    sections = (end - start) / 3
    # With a two-point run from index 0 the formula gives -1; the reference then wraps around to
    # the last lr, which is never meant: clamp to the first point instead.
    idx = max(start + int(sections) + int(sections / 2), 0)
    return float(lrs[idx]), (float(lrs[idx]), float(losses[idx]))


def slide(
    lrs: Sequence[float],
    losses: Sequence[float],
    num_it: int,
    lr_diff: int = 15,
    thresh: float = 0.005,
    adjust_value: float = 1.0,
) -> tuple[float, Point]:
    """Slide an interval of `lr_diff` points down from the largest lr until the loss gradients at
    both ends agree within `thresh`; suggest the lr at the interval's left end."""
    lrs, losses = _arrays(lrs, losses, 2, "slide")
    grads = np.gradient(losses)
    lr_diff = min(lr_diff, len(losses) - 1)  # short curves: the widest interval that fits
    right, left = -1, -1 - lr_diff
    local_min_lr = lrs[left]
    while left >= -len(losses) and abs(grads[right] - grads[left]) > thresh:
        local_min_lr = lrs[left]
        right -= 1
        left -= 1
    suggestion = float(local_min_lr) * adjust_value
    loss = float(np.interp(np.log10(suggestion), np.log10(lrs), losses))
    return suggestion, (suggestion, loss)


def minimum(lrs: Sequence[float], losses: Sequence[float], num_it: int) -> tuple[float, Point]:
    """A tenth of the lr at the minimum loss. The point is the suggestion on the curve (loss
    interpolated on the log-lr axis; the first loss when the suggestion lies left of the curve),
    not the minimum: a marker labelled with the suggestion must sit at it. (The reference marks
    the minimum itself under a label naming a tenth of its lr.)"""
    lrs, losses = _arrays(lrs, losses, 1, "minimum")
    i = int(np.argmin(losses))
    suggestion = float(lrs[i]) / 10
    loss = float(np.interp(np.log10(suggestion), np.log10(lrs), losses))
    return suggestion, (suggestion, loss)


def steep(lrs: Sequence[float], losses: Sequence[float], num_it: int) -> tuple[float, Point]:
    """The lr where the loss falls fastest against log(lr) (left end of the steepest segment)."""
    lrs, losses = _arrays(lrs, losses, 2, "steep")
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    i = int(np.argmin(slopes))
    return float(lrs[i]), (float(lrs[i]), float(losses[i]))


class SuggestionMethod:
    """The suggestion functions by name, for tab completion: `SuggestionMethod.Valley`."""

    Valley = staticmethod(valley)
    Slide = staticmethod(slide)
    Minimum = staticmethod(minimum)
    Steep = staticmethod(steep)
