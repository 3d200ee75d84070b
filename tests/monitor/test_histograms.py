"""Histograms binned on the values' device, against numpy's histogram of the same values."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_accel.monitor.histograms import histogram


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=4),
    bins=st.integers(1, 80),
    seed=st.integers(0, 2**16),
)
def test_histogram_matches_numpy(sizes, bins, seed):
    gen = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(n, generator=gen) * (i + 1) for i, n in enumerate(sizes)]
    values = torch.cat(tensors).double().numpy()
    h = histogram(tensors, bins=bins)
    if values.min() == values.max():  # a single value: one bucket (numpy would widen the range)
        assert h.counts == [float(values.size)]
        return
    counts, edges = np.histogram(values, bins=bins, range=(values.min(), values.max()))
    assert h.num == values.size
    assert h.min == pytest.approx(values.min()) and h.max == pytest.approx(values.max())
    assert h.sum == pytest.approx(values.sum(), rel=1e-4, abs=1e-3)
    assert h.sum_squares == pytest.approx((values**2).sum(), rel=1e-4)
    assert h.limits == pytest.approx(edges[1:].tolist(), rel=1e-5, abs=1e-6)
    # float32 binning may put a value that sits on an edge into the neighbouring bucket.
    assert sum(h.counts) == values.size
    assert np.abs(np.asarray(h.counts) - counts).sum() <= 2


def test_constant_values_make_one_bucket():
    h = histogram([torch.full((5,), 3.0)])
    assert (h.min, h.max, h.num, h.limits, h.counts) == (3.0, 3.0, 5, [3.0], [5.0])


@pytest.mark.parametrize("bins", [0, -3, 2.5, True])
def test_bins_must_be_a_positive_int(bins):
    with pytest.raises(ValueError, match="bins must be a positive int"):
        histogram([torch.ones(3)], bins=bins)


def test_empty_input_is_refused():
    with pytest.raises(ValueError, match="tensors must hold at least one element"):
        histogram([torch.ones(0)])


def test_non_finite_values_leave_their_group_out_and_roots_bin_square_roots():
    from lightning_accel.monitor.histograms import histograms

    bad = torch.tensor([1.0, float("nan")])
    found = histograms([[bad], [torch.tensor([4.0, 16.0])], []], bins=2, roots=[False, True, False])
    assert found[0] is None and found[2] is None
    root = found[1]
    assert (root.min, root.max, root.sum, root.sum_squares, root.counts) == (
        2.0,
        4.0,
        6.0,
        20.0,
        [1.0, 1.0],
    )
    with pytest.raises(ValueError, match="tensors must hold finite values only"):
        histogram([bad])


def test_roots_need_one_entry_per_group():
    from lightning_accel.monitor.histograms import histograms

    with pytest.raises(ValueError, match=r"roots must have one entry per group \(1\), got 2"):
        histograms([[torch.ones(2)]], roots=[True, False])
