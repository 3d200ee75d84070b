"""Histograms of a layer's values, binned where the values live.

TensorBoard's `add_histogram` copies every value to the host and bins it with numpy; for a
ResNet-34 that is 22M values per kind. Binning with `torch.histc` on the values' own device and
handing TensorBoard only the bucket counts costs no copy. `histograms` bins many groups at once
with two host transfers in all: one for the ranges (`histc` needs them as numbers), one for the
counts.

`histc` costs some fifteen times a plain pass over the values on a CPU, so a tensor of more than
`sample` elements has its buckets filled from a fixed random sample of `sample` of them, counts
scaled to the tensor's size. The bars are then an estimate: a bar holding a fraction q of the
values is off by about sqrt(q (1 - q) / sample) of the tensor's size (one standard deviation; at
most 0.2 % of it for 65,536 draws). Min, max, count, sum and sum of squares are always over
every element.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

BINS = 64
SAMPLE = 65_536
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


def check_sample(sample: int | None) -> None:
    """`sample` is None (bin every element) or a positive int."""
    if sample is None:
        return
    if not isinstance(sample, int) or isinstance(sample, bool) or sample < 1:
        raise ValueError(f"sample must be None (every element) or an int >= 1, got {sample!r}")


@lru_cache(maxsize=256)
def sample_index(numel: int, sample: int, device: torch.device) -> Tensor:
    """`sample` distinct positions in [0, numel), drawn once per size (seeded by it) and sorted,
    so that one tensor is sampled at the same positions at every step."""
    generator = torch.Generator().manual_seed(numel)
    index = torch.randperm(numel, generator=generator)[:sample].sort().values
    return index.to(device)


def _sampled(t: Tensor, sample: int | None) -> tuple[Tensor, float]:
    """`t`'s elements, flat, or a sample of them; and the weight of each one in the counts."""
    flat = t.detach().reshape(-1)
    if sample is None or flat.numel() <= sample:
        return flat, 1.0
    index = sample_index(flat.numel(), sample, flat.device)
    return flat.index_select(0, index), flat.numel() / sample


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
    groups: Sequence[Sequence[Tensor]],
    bins: int = BINS,
    roots: Sequence[bool] | None = None,
    sample: int | None = SAMPLE,
) -> list[Histogram | None]:
    """One histogram per group of tensors, over the elements of the group's tensors.

    ``roots[i]`` bins the square roots of group i's values instead (e.g. RMSProp's denominator
    from ``sqr_avg``). A group is None when it holds no element or a value that is not finite
    (a NaN or inf has no bucket). A tensor of more than `sample` elements fills the buckets from
    a fixed random sample of them (see the module's docstring); None bins every element.
    """
    _check_bins(bins)
    check_sample(sample)
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
        bucket_rows = []
        for g, t in counted:
            drawn, weight = _sampled(t, sample)
            if drawn.numel() == t.numel():
                v = values(t, roots[g])
            else:
                v = drawn.float() if drawn.dtype != torch.float64 else drawn
                v = clamped_sqrt(v, torch.empty_like(v)) if roots[g] else v
            buckets = torch.histc(v, bins=bins, min=summary[0][g], max=summary[1][g])
            bucket_rows.append(buckets.double() * weight if weight != 1.0 else buckets.double())
        cids = torch.tensor([g for g, _ in counted], device=device)
        totals = torch.zeros(n, bins, dtype=torch.float64, device=device)
        counts = totals.index_add_(0, cids, torch.stack(bucket_rows)).tolist()
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


def histogram(
    tensors: Sequence[Tensor], bins: int = BINS, sample: int | None = SAMPLE
) -> Histogram:
    """One histogram of the elements of `tensors`, in `bins` equal buckets from min to max
    (large tensors sampled as in `histograms`)."""
    _check_bins(bins)
    if not any(t.numel() > 0 for t in tensors):
        raise ValueError("tensors must hold at least one element")
    found = histograms([tensors], bins, sample=sample)[0]
    if found is None:
        raise ValueError("tensors must hold finite values only (a NaN or inf has no bucket)")
    return found
