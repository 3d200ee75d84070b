"""Histograms of a layer's values, binned where the values live.

TensorBoard's `add_histogram` copies every value to the host and bins it with numpy; for a
ResNet-34 that is 22M values per kind. Binning with `torch.histc` on the values' own device and
handing TensorBoard only the bucket counts (`add_histogram_raw`) costs one pass and no copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

BINS = 64


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


def histogram(tensors: Sequence[Tensor], bins: int = BINS) -> Histogram:
    """One histogram of every element of `tensors`, in `bins` equal buckets from min to max."""
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    flat = [t.detach().reshape(-1).float() for t in tensors if t.numel() > 0]
    if not flat:
        raise ValueError("tensors must hold at least one element")
    num = sum(f.numel() for f in flat)
    summary = torch.stack(
        [
            torch.stack([f.min() for f in flat]).min(),
            torch.stack([f.max() for f in flat]).max(),
            torch.stack([f.sum() for f in flat]).sum(),
            (torch.stack(torch._foreach_norm(flat)) ** 2).sum(),
        ]
    )
    low, high, total, squares = summary.tolist()  # one transfer: histc needs its range as floats
    if low == high:
        return Histogram(low, high, num, total, squares, [high], [float(num)])
    counts = sum(torch.histc(f, bins=bins, min=low, max=high) for f in flat)
    width = (high - low) / bins
    limits = [low + width * (i + 1) for i in range(bins)]
    limits[-1] = high  # exact, whatever the rounding of the sum above
    return Histogram(low, high, num, total, squares, limits, counts.tolist())
