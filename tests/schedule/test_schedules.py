"""Schedule functions: the published formulas at known positions, per-group values, pickling."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_accel.schedule.functions import (
    SchedCos,
    SchedExp,
    SchedLin,
    SchedNo,
    SchedPoly,
    combine_scheds,
    combined_cos,
)

from ..tiny import cos

finite = st.floats(-1e3, 1e3, allow_nan=False)
positive = st.floats(1e-6, 1e3, allow_nan=False)
pos = st.floats(0.0, 1.0)


def test_values_at_known_positions():
    assert SchedLin(0, 10)(0.3) == pytest.approx(3.0)
    assert SchedCos(0, 2)(0.0) == pytest.approx(0.0)
    assert SchedCos(0, 2)(0.5) == pytest.approx(1.0)
    assert SchedCos(0, 2)(1.0) == pytest.approx(2.0)
    assert SchedExp(1, 100)(0.5) == pytest.approx(10.0)
    assert SchedPoly(0, 1, 2)(0.5) == pytest.approx(0.25)
    assert SchedNo(3, 5)(0.7) == 3.0
    assert SchedNo(3)(0.1) == 3.0


@settings(max_examples=50, deadline=None)
@given(start=finite, end=finite, p=pos)
def test_lin_cos_no_match_formulas(start, end, p):
    assert SchedLin(start, end)(p) == pytest.approx(start + p * (end - start), abs=1e-9)
    assert SchedCos(start, end)(p) == pytest.approx(cos(start, end, p), abs=1e-9)
    assert SchedNo(start, end)(p) == start


@settings(max_examples=50, deadline=None)
@given(start=positive, end=positive, p=pos, power=st.floats(0.1, 4))
def test_exp_poly_match_formulas(start, end, p, power):
    assert SchedExp(start, end)(p) == pytest.approx(start * (end / start) ** p, rel=1e-9)
    poly = start + (end - start) * p**power
    assert SchedPoly(start, end, power)(p) == pytest.approx(poly, rel=1e-9, abs=1e-9)


def test_per_group_values_are_arrays():
    out = SchedLin([1.0, 2.0], [3.0, 6.0])(0.5)
    np.testing.assert_allclose(out, [2.0, 4.0])
    out = SchedCos(np.array([1e-3, 1e-2]), 0)(0.5)
    np.testing.assert_allclose(out, [5e-4, 5e-3])
    assert isinstance(SchedLin(1, 2)(0.5), float)


def test_combine_scheds_runs_each_phase_on_its_own_clock():
    f = combine_scheds([0.3, 0.7], [SchedLin(0, 1), SchedLin(1, 0)])
    assert f(0.0) == pytest.approx(0.0)
    assert f(0.15) == pytest.approx(0.5)
    assert f(0.3) == pytest.approx(1.0)
    assert f(0.65) == pytest.approx(0.5)
    assert f(1.0) == pytest.approx(0.0)


def test_combine_scheds_skips_zero_width_phases():
    f = combine_scheds(
        [0.0, 0.5, 0.5, 0.0], [SchedNo(9), SchedLin(0, 1), SchedLin(1, 3), SchedNo(7)]
    )
    assert f(0.0) == pytest.approx(0.0)
    assert f(0.25) == pytest.approx(0.5)
    assert f(0.75) == pytest.approx(2.0)
    assert f(1.0) == pytest.approx(3.0)


@settings(max_examples=50, deadline=None)
@given(pct=st.floats(0.05, 0.95), p=pos, start=positive, middle=positive, end=positive)
def test_combined_cos_matches_two_cosines(pct, p, start, middle, end):
    expected = cos(start, middle, p / pct) if p < pct else cos(middle, end, (p - pct) / (1 - pct))
    assert combined_cos(pct, start, middle, end)(p) == pytest.approx(expected, rel=1e-9)


def test_schedules_pickle_and_print():
    scheds = [
        SchedLin(1, 2),
        SchedCos([1.0, 2.0], 0),
        SchedNo(3),
        SchedExp(1e-7, 10),
        SchedPoly(1, 0, 2),
        combined_cos(0.25, 0.1, 1.0, 1e-5),
    ]
    for s in scheds:
        back = pickle.loads(pickle.dumps(s))
        for p in (0.0, 0.1, 0.5, 0.9):
            np.testing.assert_allclose(back(p), s(p))
    assert repr(SchedLin(1, 2)) == "SchedLin(start=1.0, end=2.0)"


@pytest.mark.parametrize(
    ("pcts", "scheds", "match"),
    [
        ([0.3, 0.6], [SchedNo(1), SchedNo(2)], "sum to 1"),
        ([0.5, 0.6], [SchedNo(1), SchedNo(2)], "sum to 1"),
        ([1.5, -0.5], [SchedNo(1), SchedNo(2)], ">= 0"),
        ([1.0], [SchedNo(1), SchedNo(2)], "one fraction per schedule"),
        ([], [], "one fraction per schedule"),
    ],
)
def test_combine_scheds_rejects_bad_fractions(pcts, scheds, match):
    with pytest.raises(ValueError, match=match):
        combine_scheds(pcts, scheds)


def test_bad_schedule_arguments():
    with pytest.raises(TypeError, match="callables of pct"):
        combine_scheds([1.0], [3.0])
    with pytest.raises(ValueError, match="same sign"):
        SchedExp(0, 1)
    with pytest.raises(ValueError, match="same sign"):
        SchedExp(-1, 1)
    with pytest.raises(TypeError, match="start must be a number"):
        SchedLin("a", 1)
    with pytest.raises(ValueError, match=r"pct must be in \[0, 1\]"):
        combined_cos(1.5, 1, 2, 3)
