"""Histograms of a layer's values, binned where the values live, over every element.

TensorBoard's `add_histogram` copies every value to the host and bins it with numpy; for a
ResNet-34 that is 22M values per kind. Binning with `torch.histc` on the values' own device and
handing TensorBoard only the bucket counts costs one pass and no copy. `histograms` bins many
groups at once with two host transfers in all: one for the ranges (`histc` needs them as
numbers), one for the counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

BINS = 64
TINY = torch.finfo(torch.float32).tiny


def clamped_sqrt(values: Tensor, out: Tensor) -> Tensor:
    """``sqrt(max(values, TINY))`` written into `out`: the square roots of non-negative values
    such as ``sqr_avg``. A CPU takes the root of an exact zero some 10x slower than of any other
    number, and optimizer state holds many zeros; the clamp turns each 0 into 1.1e-19, far below
    the float32 rounding of any sum or mean of the roots that is not itself 0."""
    return torch.clamp(values, min=TINY, out=out).sqrt_()


@dataclass(frozen=True)
class Histogram:
    """The fields of TensorBoard's HistogramProto: `limits` are the buckets' right edges."""

    min: float
    max: float
    num: int
    sum: float
    sum_squares: float
    limits: list[float]
    counts: list[float]


def _check_bins(bins: int) -> None:
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")


class _Values:
    """A tensor's elements as a flat float vector, or their square roots written into a scratch
    buffer shared by all tensors (no allocation the size of the model)."""

    def __init__(self, groups: Sequence[Sequence[Tensor]], roots: Sequence[bool]) -> None:
        rooted = [t for group, root in zip(groups, roots) if root for t in group]
        self.scratch: Tensor | None = None
        if rooted:
            largest = max(t.numel() for t in rooted)
            self.scratch = torch.empty(largest, dtype=torch.float32, device=rooted[0].device)

    def __call__(self, t: Tensor, root: bool) -> Tensor:
        flat = t.detach().reshape(-1)
        if flat.dtype not in (torch.float32, torch.float64):
            flat = flat.float()
        if not root:
            return flat
        return clamped_sqrt(flat, self.scratch[: flat.numel()])


def histograms(
    groups: Sequence[Sequence[Tensor]], bins: int = BINS, roots: Sequence[bool] | None = None
) -> list[Histogram | None]:
    """One histogram per group of tensors, over every element of the group's tensors.

    ``roots[i]`` bins the square roots of group i's values instead (e.g. RMSProp's denominator
    from ``sqr_avg``). A group is None when it holds no element or a value that is not finite
    (a NaN or inf has no bucket).
    """
    _check_bins(bins)
    roots = [False] * len(groups) if roots is None else list(roots)
    if len(roots) != len(groups):
        raise ValueError(f"roots must have one entry per group ({len(groups)}), got {len(roots)}")
    entries = [(g, t) for g, ts in enumerate(groups) for t in ts if t.numel() > 0]
    result: list[Histogram | None] = [None] * len(groups)
    if not entries:
        return result
    values = _Values(groups, roots)
    rows = []
    for g, t in entries:
        v = values(t, roots[g])
        low, high = torch.aminmax(v)
        rows.append(torch.stack([low, high, v.sum(), torch.dot(v, v)]).double())
    device = rows[0].device
    gids = torch.tensor([g for g, _ in entries], device=device)
    per = torch.stack(rows)
    n = len(groups)
    lows = torch.full((n,), math.inf, dtype=torch.float64, device=device)
    highs = torch.full((n,), -math.inf, dtype=torch.float64, device=device)
    lows = lows.scatter_reduce(0, gids, per[:, 0], "amin")
    highs = highs.scatter_reduce(0, gids, per[:, 1], "amax")
    sums = torch.zeros(n, dtype=torch.float64, device=device).index_add_(0, gids, per[:, 2])
    squares = torch.zeros(n, dtype=torch.float64, device=device).index_add_(0, gids, per[:, 3])
    summary = torch.stack([lows, highs, sums, squares]).tolist()  # transfer 1: the ranges
    nums = [0] * n
    for g, t in entries:
        nums[g] += t.numel()

    finite = [all(math.isfinite(summary[k][g]) for k in range(4)) for g in range(n)]
    counted = [(g, t) for g, t in entries if finite[g] and summary[0][g] < summary[1][g]]
    counts: list[list[float]] = []
    if counted:
        bucket_rows = [
            torch.histc(values(t, roots[g]), bins=bins, min=summary[0][g], max=summary[1][g])
            for g, t in counted
        ]
        cids = torch.tensor([g for g, _ in counted], device=device)
        totals = torch.zeros(n, bins, dtype=torch.float64, device=device)
        counts = totals.index_add_(0, cids, torch.stack(bucket_rows).double()).tolist()
    for g in range(n):
        if nums[g] == 0 or not finite[g]:
            continue
        low, high, total, sq = (summary[k][g] for k in range(4))
        if low == high:
            result[g] = Histogram(low, high, nums[g], total, sq, [high], [float(nums[g])])
            continue
        width = (high - low) / bins
        limits = [low + width * (i + 1) for i in range(bins)]
        limits[-1] = high  # exact, whatever the rounding of the sum above
        result[g] = Histogram(low, high, nums[g], total, sq, limits, counts[g])
    return result


def histogram(tensors: Sequence[Tensor], bins: int = BINS) -> Histogram:
    """One histogram of every element of `tensors`, in `bins` equal buckets from min to max."""
    _check_bins(bins)
    if not any(t.numel() > 0 for t in tensors):
        raise ValueError("tensors must hold at least one element")
    found = histograms([tensors], bins)[0]
    if found is None:
        raise ValueError("tensors must hold finite values only (a NaN or inf has no bucket)")
    return found
