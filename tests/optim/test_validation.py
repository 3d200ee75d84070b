"""Every hyper-parameter of every recipe is checked on construction and on set_hyper/set_hypers,
parameters the optimizer cannot update are refused when it is built, and a refusal changes nothing.

The allowed ranges below are written out from the published constraints (torch.optim's checks,
QHAdam's paper, LARS's paper), independently of `validation.HYPER_RANGES`.
"""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_accel.optim import (
    SGD,
    AccelOptimizer,
    Adam,
    Lamb,
    Larc,
    Lookahead,
    QHAdam,
    RAdam,
    RMSProp,
    ranger,
    sgd_step,
)

from .helpers import gradient_sequence, initial_params, max_rel_diff, run

# name -> (low, high, low_open, high_open, text the message shows)
AT_LEAST_0 = (0.0, math.inf, False, True, ">= 0")
MOMENTUM = (0.0, 1.0, False, True, "in [0, 1)")
CLOSED_UNIT = (0.0, 1.0, False, False, "in [0, 1]")
ABOVE_0 = (0.0, math.inf, True, True, "> 0")
RANGES = {
    "lr": AT_LEAST_0,
    "wd": AT_LEAST_0,
    "eps": AT_LEAST_0,
    "beta": AT_LEAST_0,
    "mom": MOMENTUM,
    "sqr_mom": MOMENTUM,
    "nu_1": CLOSED_UNIT,
    "nu_2": CLOSED_UNIT,
    "trust_coeff": ABOVE_0,
}
# Each recipe and the hyper-parameters it takes as arguments.
RECIPES = {
    "SGD": (SGD, ["lr", "mom", "wd"]),
    "RMSProp": (RMSProp, ["lr", "sqr_mom", "mom", "wd"]),
    "Adam": (Adam, ["lr", "mom", "sqr_mom", "eps", "wd"]),
    "RAdam": (RAdam, ["lr", "mom", "sqr_mom", "eps", "wd", "beta"]),
    "QHAdam": (QHAdam, ["lr", "mom", "sqr_mom", "nu_1", "nu_2", "eps", "wd"]),
    "Larc": (Larc, ["lr", "mom", "trust_coeff", "eps", "wd"]),
    "Lamb": (Lamb, ["lr", "mom", "sqr_mom", "eps", "wd"]),
    "ranger": (ranger, ["lr", "mom", "sqr_mom", "eps", "wd", "beta"]),
}
RECIPE_HYPERS = [(r, h) for r, (_, names) in RECIPES.items() for h in names]
EXAMPLES = settings(max_examples=15, deadline=None)


def _params():
    return [torch.randn(3, 2, requires_grad=True), torch.randn(2, requires_grad=True)]


def _two_groups():
    a, b = _params()
    return [[a], [b]]


def good_values(name: str):
    low, high, low_open, high_open, _ = RANGES[name]
    floats = st.floats(
        low,
        min(high, 1e6),
        exclude_min=low_open,
        exclude_max=high_open or high == math.inf,
        allow_nan=False,
    )
    return st.one_of(floats, floats.map(lambda v: torch.tensor(v, dtype=torch.float64)))


def out_of_range(name: str):
    low, high, low_open, high_open, _ = RANGES[name]
    below = st.floats(max_value=low, exclude_max=not low_open, allow_nan=False, min_value=-1e9)
    values = [below, st.sampled_from([math.nan, math.inf, -math.inf])]
    if high != math.inf:
        values.append(st.floats(min_value=high, exclude_min=not high_open, max_value=1e9))
    return st.one_of(*values)


NOT_NUMBERS = st.one_of(
    st.booleans(),
    st.text(max_size=4),
    st.complex_numbers(allow_nan=False, allow_infinity=False).filter(lambda z: z.imag != 0),
    st.none(),
    st.just(torch.tensor([0.1, 0.2])),  # more than one value
    st.just(torch.tensor(1)),  # an integer tensor
    st.just({"lr": 0.1}),
)


def _build(recipe: str, **kwargs):
    make, _ = RECIPES[recipe]
    kwargs.setdefault("lr", 0.01)
    return make(_two_groups(), **kwargs)


def _assert_refused(info: pytest.ExceptionInfo, name: str, value) -> None:
    """The refusal of `value` for `name` says the name and what is allowed."""
    message = re.sub(r" \(parameter group \d+\)", "", str(info.value))
    if isinstance(value, float):
        assert isinstance(info.value, ValueError)
        assert f"{name} must be a finite number {RANGES[name][4]}, got {value!r}" in message
    else:
        assert isinstance(info.value, TypeError)
        assert f"{name} must be a real number" in message


# -- construction ----------------------------------------------------------------------------


@pytest.mark.parametrize("recipe, name", RECIPE_HYPERS)
@EXAMPLES
@given(data=st.data())
def test_construction_refuses_bad_values_naming_the_argument_and_range(recipe, name, data):
    value = data.draw(st.one_of(out_of_range(name), NOT_NUMBERS))
    with pytest.raises((TypeError, ValueError)) as info:
        _build(recipe, **{name: value})
    _assert_refused(info, name, value)


@pytest.mark.parametrize("recipe, name", RECIPE_HYPERS)
@EXAMPLES
@given(data=st.data())
def test_construction_accepts_every_value_in_range(recipe, name, data):
    value = data.draw(good_values(name))
    opt = _build(recipe, **{name: value})
    assert all(h[name] is value for h in opt.hypers)


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r != "ranger"])
def test_recipe_switches_must_be_bools(recipe):
    with pytest.raises(TypeError, match="decouple_wd must be True or False, got str 'yes'"):
        _build(recipe, decouple_wd="yes")


def test_larc_clip_must_be_a_bool():
    with pytest.raises(TypeError, match="clip must be True or False"):
        _build("Larc", clip=1)


def test_lookahead_alpha_and_k_are_checked():
    with pytest.raises(TypeError, match=r"alpha must be a real number in \(0, 1\]"):
        Lookahead(Adam(_params(), lr=0.1), alpha=True)
    with pytest.raises(ValueError, match=r"alpha must be a finite number in \(0, 1\]"):
        Lookahead(Adam(_params(), lr=0.1), alpha=float("nan"))
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        Lookahead(Adam(_params(), lr=0.1), k=0)


def test_betas_must_be_a_pair():
    with pytest.raises(TypeError, match=r"betas must be a pair \(mom, sqr_mom\)"):
        AccelOptimizer(_params(), [sgd_step], lr=0.1, betas=(0.9, 0.99, 0.5))


def test_a_hyper_parameter_no_callback_reads_still_warns():
    with pytest.warns(UserWarning, match=r"\['mon'\] are not arguments of any callback"):
        AccelOptimizer(_params(), [sgd_step], lr=0.1, mon=0.9)


# -- set_hyper and set_hypers ----------------------------------------------------------------


def _snapshot(opt):
    return copy.deepcopy(opt.hypers), [dict(g) for g in opt.param_groups]


@pytest.mark.parametrize("recipe, name", RECIPE_HYPERS)
@EXAMPLES
@given(data=st.data())
def test_set_hyper_refuses_bad_values_and_changes_nothing(recipe, name, data):
    opt = _build(recipe)
    value = data.draw(st.one_of(out_of_range(name), NOT_NUMBERS))
    per_group = data.draw(st.booleans())
    before = _snapshot(opt)
    with pytest.raises((TypeError, ValueError)) as info:
        opt.set_hyper(name, [0.25, value] if per_group else value)
    _assert_refused(info, name, value)
    if per_group:
        assert f"{name} (parameter group 1) must be" in str(info.value)
    assert _snapshot(opt) == before


@pytest.mark.parametrize("recipe, name", RECIPE_HYPERS)
@EXAMPLES
@given(data=st.data())
def test_set_hyper_accepts_every_value_in_range(recipe, name, data):
    opt = _build(recipe)
    value = data.draw(good_values(name))
    opt.set_hyper(name, value)
    assert all(h[name] is value for h in opt.hypers)


@EXAMPLES
@given(good=good_values("lr"), bad=out_of_range("mom"))
def test_set_hypers_applies_nothing_when_one_value_is_bad(good, bad):
    opt = _build("Adam")
    before = _snapshot(opt)
    with pytest.raises(ValueError, match="mom must be a finite number"):
        opt.set_hypers(lr=good, mom=bad)
    assert _snapshot(opt) == before


def test_the_hyper_parameters_a_recipe_gets_from_its_callbacks_are_checked_too():
    opt = RMSProp(_params(), lr=0.1)  # eps comes from rms_prop_step.defaults
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        opt.set_hyper("eps", -1e-8)
    with pytest.raises(ValueError, match=r"eps \(parameter group 1\) must be a finite number >= 0"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "eps": -1.0})
    assert len(opt.param_groups) == 1


def test_a_tensor_learning_rate_trains_like_the_float():
    shapes = [(3, 2), (2,)]
    init, grads = initial_params(shapes, 0), gradient_sequence(shapes, 5, 0)
    as_float = run(lambda ps: Adam(ps, lr=0.01), init, grads)
    as_tensor = run(lambda ps: Adam(ps, lr=torch.tensor(0.01)), init, grads)
    assert max_rel_diff(as_tensor, as_float) <= 1e-6  # the tensor holds 0.01 in float32


# -- slices ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, error, match",
    [
        (slice(0, 1e-2), ValueError, "both must be finite and > 0; got slice"),
        (slice(1e-2, 0), ValueError, "both must be finite and > 0"),
        (slice(-1e-3, 1e-2), ValueError, "both must be finite and > 0"),
        (slice(1e-3, math.inf), ValueError, "both must be finite and > 0"),
        (slice("a", 1e-2), TypeError, "the start of a slice .* must be a number"),
        (slice(None, "b"), TypeError, "the stop of a slice .* must be a number"),
        (slice(1e-3, 1e-2, 2), ValueError, r"slice\(stop\) or slice\(start, stop\)"),
        (slice(1e-3, None), ValueError, r"slice\(stop\) or slice\(start, stop\)"),
        (slice(-1.0), ValueError, r"lr \(parameter group 0\) must be a finite number >= 0"),
    ],
)
def test_bad_slices_get_a_clear_error_and_change_nothing(value, error, match):
    opt = _build("SGD")
    before = _snapshot(opt)
    with pytest.raises(error, match=match):
        opt.set_hyper("lr", value)
    assert _snapshot(opt) == before


# -- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_non_floating_parameters_are_refused_naming_group_and_index(recipe, dtype):
    make, _ = RECIPES[recipe]
    good = torch.zeros(2, requires_grad=True)
    bad = torch.zeros(4, 3, dtype=dtype)
    with pytest.raises(
        TypeError,
        match=rf"parameter 1 of parameter group 0, of shape \(4, 3\) "
        rf"and dtype {dtype},? is not floating point",
    ):
        make([good, bad], lr=0.1)


def test_named_parameters_are_named_in_the_error_and_a_refused_group_is_not_added():
    opt = Adam([("w", torch.zeros(2, requires_grad=True))], lr=0.1)
    before = _snapshot(opt)
    steps = torch.zeros(1, dtype=torch.long)
    named = {"params": [("b", torch.zeros(1, requires_grad=True)), ("steps", steps)]}
    with pytest.raises(TypeError, match=r"parameter 1 of parameter group 1 \('steps'\)"):
        opt.add_param_group(named)
    assert _snapshot(opt) == before


@pytest.mark.parametrize("recipe", ["RMSProp", "Adam", "RAdam", "QHAdam", "Larc", "Lamb", "ranger"])
def test_complex_parameters_are_refused_by_recipes_whose_math_is_not_complex(recipe):
    make, _ = RECIPES[recipe]
    params = [torch.zeros(2, requires_grad=True), torch.zeros(3, dtype=torch.complex64)]
    with pytest.raises(TypeError, match=r"parameter 1 of parameter group 0.*complex64.*is complex"):
        make(params, lr=0.1)


def test_a_custom_pipeline_refuses_complex_unless_allowed():
    p = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    with pytest.raises(TypeError, match="is complex"):
        AccelOptimizer([p], [sgd_step], lr=0.1)
    AccelOptimizer([p], [sgd_step], lr=0.1, allow_complex=True)
    with pytest.raises(TypeError, match="allow_complex must be True or False"):
        AccelOptimizer([p], [sgd_step], lr=0.1, allow_complex="yes")


def test_compiled_sgd_refuses_complex_parameters_at_construction():
    p = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    with pytest.raises(TypeError, match="complex parameters, which torch.compile cannot"):
        SGD([p], lr=0.1, impl="compiled")


@pytest.mark.parametrize("impl", ["per_param", "auto", "foreach"])
@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    mom=st.sampled_from([0.0, 0.9]),
    wd=st.sampled_from([0.0, 0.01]),
)
def test_sgd_on_complex_parameters_equals_torch_sgd(impl, seed, mom, wd):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(4, 3), (3,)]
    init = [torch.randn(s, dtype=torch.complex64, generator=gen) for s in shapes]
    grads = [
        [torch.randn(s, dtype=torch.complex64, generator=gen) for s in shapes] for _ in range(20)
    ]
    ours = run(
        lambda ps: SGD(ps, lr=0.05, mom=mom, wd=wd, decouple_wd=False, impl=impl), init, grads
    )
    theirs = run(
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=mom, weight_decay=wd), init, grads
    )
    for a, b in zip(ours, theirs):
        assert a.is_complex()
        assert torch.allclose(torch.view_as_real(a), torch.view_as_real(b), rtol=1e-6, atol=1e-7)
