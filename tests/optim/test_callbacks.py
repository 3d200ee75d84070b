"""The callback contract: the chapter's own callbacks run unmodified; flags and helpers behave."""

from functools import partial

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_accel.optim import (
    SGD,
    AccelOptimizer,
    debias,
    l2_reg,
    step_stat,
    weight_decay,
)

from .helpers import gradient_sequence, initial_params, max_rel_diff, run

# The chapter's callbacks, as printed, with today's `add_(tensor, alpha=...)` form.


def sgd_cb(p, lr, **kwargs):
    p.data.add_(p.grad.data, alpha=-lr)


def average_grad(p, mom, grad_avg=None, **kwargs):
    if grad_avg is None:
        grad_avg = torch.zeros_like(p.grad.data)
    return {"grad_avg": grad_avg * mom + p.grad.data}


def momentum_step(p, lr, grad_avg, **kwargs):
    p.data.add_(grad_avg, alpha=-lr)


def average_sqr_grad(p, sqr_mom, sqr_avg=None, **kwargs):
    if sqr_avg is None:
        sqr_avg = torch.zeros_like(p.grad.data)
    return {"sqr_avg": sqr_mom * sqr_avg + (1 - sqr_mom) * p.grad.data**2}


def rms_prop_step(p, lr, sqr_avg, eps, grad_avg=None, **kwargs):
    denom = sqr_avg.sqrt().add_(eps)
    p.data.addcdiv_(p.grad, denom, value=-lr)


SHAPES = [(4, 5), (5,)]


def _compare(opt_func, torch_opt, **kwargs):
    init, grads = initial_params(SHAPES, 0), gradient_sequence(SHAPES, 30, 0)
    ours = run(lambda ps: opt_func(ps, **kwargs), init, grads)
    return max_rel_diff(ours, run(torch_opt, init, grads))


@pytest.mark.parametrize("impl", ["per_param", "auto"])
def test_the_chapters_sgd_callback_is_sgd(impl):
    opt_func = partial(AccelOptimizer, cbs=[sgd_cb], impl=impl)
    assert _compare(opt_func, lambda ps: torch.optim.SGD(ps, lr=0.1), lr=0.1) == 0


@pytest.mark.parametrize("impl", ["per_param", "auto"])
def test_the_chapters_momentum_callbacks_are_sgd_with_momentum(impl):
    opt_func = partial(AccelOptimizer, cbs=[average_grad, momentum_step], mom=0.9, impl=impl)
    theirs = lambda ps: torch.optim.SGD(ps, lr=0.03, momentum=0.9)  # noqa: E731
    assert _compare(opt_func, theirs, lr=0.03) <= 1e-6


@pytest.mark.parametrize("impl", ["per_param", "auto"])
def test_the_chapters_rmsprop_callbacks_are_rmsprop(impl):
    opt_func = partial(
        AccelOptimizer, cbs=[average_sqr_grad, rms_prop_step], sqr_mom=0.99, eps=1e-7, impl=impl
    )
    theirs = lambda ps: torch.optim.RMSprop(ps, lr=3e-3, alpha=0.99, eps=1e-7)  # noqa: E731
    assert _compare(opt_func, theirs, lr=3e-3) <= 1e-6


def test_a_pipeline_mixing_user_and_built_in_callbacks_gives_the_reference_numbers():
    # weight_decay has a multi-tensor form, the chapter's sgd_cb does not: "auto" must fall back.
    init, grads = initial_params(SHAPES, 0), gradient_sequence(SHAPES, 30, 0)
    mixed = run(lambda ps: AccelOptimizer(ps, [weight_decay, sgd_cb], lr=0.1, wd=0.01), init, grads)
    built_in = run(lambda ps: SGD(ps, lr=0.1, wd=0.01, impl="per_param"), init, grads)
    assert max_rel_diff(mixed, built_in) == 0


def _decoupled_sgd_rule(w, grads, lr, mom, wd):
    """Loshchilov & Hutter's SGDW in float64: w <- w (1 - lr wd) - lr m, m <- mom m + g."""
    w, m = w.double(), torch.zeros_like(w, dtype=torch.float64)
    for g in grads:
        w = w * (1 - lr * wd)
        m = mom * m + g.double()
        w = w - lr * m
    return w


# impl="auto" runs SGD with momentum through torch's fused kernel: compared with torch's own fused
# SGD it must be identical; the per-parameter loop is compared with torch's for-loop SGD.
@pytest.mark.parametrize(
    "impl, torch_kw", [("per_param", {"foreach": False}), ("auto", {"fused": True})]
)
@pytest.mark.parametrize("decouple_wd", [True, False], ids=["weight_decay", "l2_reg"])
def test_do_wd_false_switches_weight_decay_off_for_that_parameter(decouple_wd, impl, torch_kw):
    init, grads = initial_params(SHAPES, 2), gradient_sequence(SHAPES, 10, 2)

    def ours(ps):
        opt = SGD(ps, lr=0.1, mom=0.9, wd=0.1, decouple_wd=decouple_wd, impl=impl)
        opt.state[ps[1]]["do_wd"] = False  # e.g. a bias
        return opt

    def torch_l2(ps):
        groups = [{"params": [ps[0]], "weight_decay": 0.1}, {"params": [ps[1]]}]
        return torch.optim.SGD(groups, lr=0.1, momentum=0.9, **torch_kw)

    got, want = run(ours, init, grads), run(torch_l2, init, grads)
    assert max_rel_diff(got[1:], want[1:]) == 0  # no decay at all on the flagged parameter
    if decouple_wd:
        ref = _decoupled_sgd_rule(init[0], [g[0] for g in grads], lr=0.1, mom=0.9, wd=0.1)
        assert max_rel_diff(got[:1], [ref]) <= 1e-5  # float32 against float64
    else:
        assert max_rel_diff(got[:1], want[:1]) == 0


def test_weight_decay_and_l2_reg_do_what_they_say():
    p = torch.ones(3, requires_grad=True)
    p.grad = torch.zeros(3)
    weight_decay(p, lr=0.1, wd=0.5)
    assert torch.allclose(p.detach(), torch.full((3,), 0.95))
    l2_reg(p, lr=0.1, wd=0.5)
    assert torch.allclose(p.grad, torch.full((3,), 0.475))
    l2_reg(p, lr=0.1, wd=0.5, do_wd=False)
    weight_decay(p, lr=0.1, wd=0.5, do_wd=False)
    assert torch.allclose(p.grad, torch.full((3,), 0.475))
    assert torch.allclose(p.detach(), torch.full((3,), 0.95))


@settings(max_examples=30, deadline=None)
@given(mom=st.floats(0.0, 0.999), step=st.integers(1, 200))
def test_debias_is_the_total_weight_of_a_damped_average(mom, step):
    # A damped average of a constant 1 after `step` updates equals debias(...).
    avg = 0.0
    for _ in range(step):
        avg = mom * avg + (1 - mom) * 1.0
    assert debias(mom, 1 - mom, step) == pytest.approx(avg, rel=1e-9, abs=1e-12)


def test_step_stat_counts_steps():
    p = torch.zeros(1, requires_grad=True)
    opt = AccelOptimizer([p], [step_stat])
    for _ in range(3):
        p.grad = torch.ones(1)
        opt.step()
    assert opt.state[p]["step"] == 3
