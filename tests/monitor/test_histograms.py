"""Histograms binned on the values' device, against numpy's histogram of the same values."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_accel.monitor.histograms import histogram, histograms, sample_index


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


def test_a_tensor_over_the_sample_size_is_binned_from_a_sample_with_exact_moments():
    """Buckets from 4,096 of 300,000 values, scaled to the tensor's size: each within six
    binomial standard deviations of numpy's exact count (the sample is fixed, so this is not
    a matter of luck from one run to the next); min, max, count, sum and squares exact."""
    gen = torch.Generator().manual_seed(0)
    big = torch.randn(300_000, generator=gen) * 2 + 1
    small = torch.rand(1_000, generator=gen) * 5  # under the sample size: binned whole
    values = torch.cat([big, small]).double().numpy()
    h = histogram([big, small], bins=16, sample=4_096)
    exact, _ = np.histogram(values, bins=16, range=(values.min(), values.max()))
    assert h.num == values.size
    assert (h.min, h.max) == (values.min(), values.max())
    assert h.sum == pytest.approx(values.sum(), rel=1e-5)
    assert h.sum_squares == pytest.approx((values**2).sum(), rel=1e-5)
    assert sum(h.counts) == pytest.approx(values.size)
    weight = big.numel() / 4_096
    p = exact / values.size
    tolerance = 6 * weight * np.sqrt(4_096 * p * (1 - p)) + 2
    assert np.all(np.abs(np.asarray(h.counts) - exact) <= tolerance)
    assert h.counts != pytest.approx(exact.tolist())  # it is a sample, not the whole tensor


def test_sample_none_bins_every_element_exactly():
    big = torch.randn(100_000, generator=torch.Generator().manual_seed(1))
    h = histogram([big], bins=8, sample=None)
    values = big.double().numpy()
    exact, _ = np.histogram(values, bins=8, range=(values.min(), values.max()))
    assert np.abs(np.asarray(h.counts) - exact).sum() <= 2  # edge values may change bucket


def test_sampled_roots_bin_the_square_roots_of_the_sample():
    sqr = torch.rand(200_000, generator=torch.Generator().manual_seed(2)) ** 2
    (h,) = histograms([[sqr]], bins=10, roots=[True], sample=8_192)
    roots = sqr.double().sqrt().numpy()
    exact, _ = np.histogram(roots, bins=10, range=(roots.min(), roots.max()))
    assert h.min == pytest.approx(roots.min()) and h.max == pytest.approx(roots.max())
    p = exact / roots.size
    tolerance = 6 * (roots.size / 8_192) * np.sqrt(8_192 * p * (1 - p)) + 2
    assert np.all(np.abs(np.asarray(h.counts) - exact) <= tolerance)


def test_a_tensor_is_sampled_at_the_same_distinct_positions_every_time():
    first = sample_index(50_000, 1_000, torch.device("cpu"))
    again = sample_index.__wrapped__(50_000, 1_000, torch.device("cpu"))  # drawn afresh
    assert torch.equal(first, again)
    assert first.unique().numel() == 1_000 and bool((first.diff() > 0).all())
    assert int(first.min()) >= 0 and int(first.max()) < 50_000


@pytest.mark.parametrize("sample", [0, -1, 2.5, True])
def test_sample_must_be_none_or_a_positive_int(sample):
    with pytest.raises(ValueError, match=r"sample must be None \(every element\) or an int >= 1"):
        histogram([torch.ones(3)], sample=sample)
