"""lr_find suggestions on synthetic loss curves with hand-computed answers."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_accel.schedule.suggestions import SuggestionMethod, minimum, slide, steep, valley


def _lrs(n):
    return np.logspace(-6, 0, n)


def test_minimum_is_a_tenth_of_the_lowest_point_and_marked_there():
    lrs = _lrs(61)  # 1e-3 is lrs[30]
    losses = (np.log10(lrs) + 3) ** 2
    lr, (x, y) = minimum(lrs, losses, 100)
    assert lr == pytest.approx(1e-4)
    # The point is the suggestion on the curve (1e-4 is lrs[20], loss (-4 + 3)^2), not the
    # minimum at 1e-3: a marker labelled "minimum: 1.00e-04" sits at 1e-4.
    assert (x, y) == (pytest.approx(1e-4), pytest.approx(1.0))


def test_steep_is_the_left_end_of_the_steepest_drop():
    lrs = _lrs(40)
    losses = np.ones(40)
    losses[20:] = 0.5  # the only fall is between points 19 and 20
    losses[30:] = 0.45
    lr, (x, y) = steep(lrs, losses, 100)
    assert lr == pytest.approx(lrs[19])
    assert (x, y) == (pytest.approx(lrs[19]), pytest.approx(1.0))


def test_valley_on_a_curve_falling_from_the_start():
    # The whole curve is the valley: run length 31 ends at 30, start = 30 - 31 = -1,
    # sections = 31/3 -> index -1 + 10 + 5 = 14.
    lrs = _lrs(31)
    losses = np.linspace(3.0, 1.0, 31)
    lr, (x, y) = valley(lrs, losses, 100)
    assert lr == pytest.approx(lrs[14])
    assert y == pytest.approx(losses[14])


def test_valley_finds_the_longest_descent():
    # Rise, an 8-point descent (indices 3..10), rise: end 10, start 2, sections 8/3 -> 2 + 2 + 1.
    losses = np.array([1, 2, 3, 4, 3.5, 3, 2.5, 2, 1.5, 1.0, 0.5, 2, 3, 4])
    lrs = _lrs(len(losses))
    lr, (x, y) = valley(lrs, losses, 100)
    assert lr == pytest.approx(lrs[5])
    assert y == pytest.approx(3.0)


def _valley_by_the_book(lrs, losses):
    """The published O(n^2) longest-valley algorithm, written out independently.

    One documented deviation: a two-point valley at the very start gives index -1, which the
    reference wraps to the last (largest) lr; we clamp it to the first point."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return float(lrs[max(max_start + int(sections) + int(sections / 2), 0)])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=3, max_size=40))
def test_valley_agrees_with_the_published_algorithm(losses):
    losses = np.array(losses)
    lrs = _lrs(len(losses))
    assert valley(lrs, losses, 100)[0] == pytest.approx(_valley_by_the_book(lrs, losses))


def test_slide_moves_left_until_the_interval_is_straight():
    # Falling (slope -0.1) up to 20, flat to 34, rising (slope 0.5) after. Sliding a 15-point
    # interval left from the end, both ends' gradients first agree at (4, 19): the previous
    # left end, 5, is the suggestion.
    i = np.arange(50)
    losses = np.where(i <= 20, 0.1 * (20 - i), np.where(i <= 34, 0.0, 0.5 * (i - 34)))
    lrs = _lrs(50)
    lr, (x, y) = slide(lrs, losses, 100)
    assert lr == pytest.approx(lrs[5])
    assert y == pytest.approx(losses[5])


def test_valley_two_point_start_is_clamped_not_wrapped():
    lrs = _lrs(3)
    assert valley(lrs, np.array([1.0, 0.0, 0.0]), 100)[0] == pytest.approx(lrs[0])


def test_suggestions_accept_tensors_and_short_curves():
    lrs = torch.logspace(-6, 0, 10)
    losses = torch.linspace(2, 1, 10)
    assert valley(lrs, losses, 10)[0] == pytest.approx(valley(lrs.numpy(), losses.numpy(), 10)[0])
    assert slide(lrs, losses, 10)[0] > 0  # lr_diff 15 > 10 points: shrinks to fit
    assert SuggestionMethod.Steep is steep or SuggestionMethod.Steep == steep


def test_suggestions_reject_too_few_points():
    with pytest.raises(ValueError, match="at least 2 recorded losses"):
        steep([1e-3], [1.0], 100)
    with pytest.raises(ValueError, match="at least 1 recorded losses"):
        valley([], [], 100)
    with pytest.raises(ValueError, match="3 lrs but 2 losses"):
        minimum([1, 2, 3], [1, 2], 100)
