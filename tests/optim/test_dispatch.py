"""Executors: every impl computes what the reference per-parameter loop computes.

The per-parameter loop over the reference callbacks is the specification; the multi-tensor forms
and the fused routing are checked against it step by step (with parameters missing gradients,
per-parameter `do_wd` flags and hyper-parameters changed between steps), against torch.optim, and
against hand-computed float64 updates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_accel.optim import callbacks as cbs_mod
from lightning_accel.optim import dispatch, recipes
from lightning_accel.optim.dispatch import Composed, PerParam, executor_for
from lightning_accel.optim.optimizer import AccelOptimizer
from lightning_accel.optim.pipeline import base_function, foreach_form

from .helpers import run

SHAPES = [(3, 4), (5,), (2, 3, 2), (1,), (7,)]
NO_GRAD_EVERY = 3  # parameter 3 has no gradient on every third step
NO_WD = 1  # parameter 1 has do_wd=False

# Recipes with hyper-parameters chosen so every branch runs: RAdam's first steps are
# unrectified (r <= 5) and later ones rectified; LARC both clips and not.
RECIPES: dict[str, Callable] = {
    "SGD": partial(recipes.SGD, lr=0.1, wd=0.1),
    "SGD-mom-l2": partial(recipes.SGD, lr=0.1, mom=0.9, wd=0.1, decouple_wd=False),
    "RMSProp": partial(recipes.RMSProp, lr=0.01, wd=0.1),
    "RMSProp-mom": partial(recipes.RMSProp, lr=0.01, mom=0.9, wd=0.1, decouple_wd=False),
    "Adam": partial(recipes.Adam, lr=0.01),
    "Adam-l2": partial(recipes.Adam, lr=0.01, decouple_wd=False),
    "RAdam": partial(recipes.RAdam, lr=0.01, wd=0.1),
    "RAdam-beta": partial(recipes.RAdam, lr=0.01, beta=5.0),
    "QHAdam": partial(recipes.QHAdam, lr=0.01, wd=0.1),
    "Larc": partial(recipes.Larc, lr=0.1, wd=0.01),
    "Lars-nomom": partial(recipes.Larc, lr=0.1, mom=0.0, clip=False, wd=0.01),
    "Lamb": partial(recipes.Lamb, lr=0.01, wd=0.01),
}
# Forms that reduce with norms instead of pow/mean/sqrt round differently in the last bits.
LOOSE = {"Lamb": 1e-5}


def trajectory(
    make: Callable, impl: str, steps: int = 9, schedule: bool = True, late: bool = False
):
    """Run `make(params, impl=impl)` for `steps` steps; returns (params, optimizer).

    Gradients are reproducible; parameter 3 misses every third step (or, when `late`, the first
    three steps), parameter 1 has do_wd=False, and lr (and mom, where used) change before every
    step as a schedule would.
    """
    gen = torch.Generator().manual_seed(1)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]
    opt = make(params, impl=impl)
    opt.state[params[NO_WD]]["do_wd"] = False
    base = opt.hypers[0]
    for t in range(steps):
        for i, p in enumerate(params):
            grad = torch.randn(p.shape, generator=gen)
            missing = t < 3 if late else t % NO_GRAD_EVERY == 1
            p.grad = None if i == 3 and missing else grad
        if schedule:
            opt.set_hyper("lr", base["lr"] * (1 + 0.5 * math.sin(t)))
            if base.get("mom"):
                opt.set_hyper("mom", base["mom"] * (1 - 0.01 * t))
        opt.step()
    return params, opt


def assert_same_run(got, ref, rtol: float = 1e-6) -> None:
    """Same parameters and same state, key by key (numbers and tensors alike)."""
    (gp, gopt), (rp, ropt) = got, ref
    for a, b in zip(gp, rp):
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * 1e-1)
    for a, b in zip(gp, rp):
        sa, sb = gopt.state[a], ropt.state[b]
        assert set(sa) == set(sb)
        for key in sb:
            x, y = sa[key], sb[key]
            if isinstance(y, torch.Tensor) or isinstance(x, torch.Tensor):
                torch.testing.assert_close(
                    torch.as_tensor(x).double(), torch.as_tensor(y).double(), rtol=rtol, atol=0
                )
            else:
                assert x == y, key


@pytest.mark.parametrize("impl", ["composed", "foreach", "auto"])
@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_matches_per_param(name, impl, monkeypatch):
    monkeypatch.setattr(dispatch, "CPU_BUCKET_NUMEL", 16)  # several buckets per group
    make = RECIPES[name]
    ref = trajectory(make, "per_param")
    got = trajectory(make, impl)
    assert_same_run(got, ref, rtol=LOOSE.get(name, 1e-6))


@pytest.mark.parametrize("bucket_numel", [1 << 18, 8])
@pytest.mark.parametrize("name", ["SGD", "Adam", "RAdam", "QHAdam", "Larc"])
def test_foreach_is_bit_exact_with_per_param(name, bucket_numel, monkeypatch):
    """Where the forms use the same kernels in the same order, the numbers are identical, whether
    the group runs as one bucket or (CPU cache blocking) as several."""
    monkeypatch.setattr(dispatch, "CPU_BUCKET_NUMEL", bucket_numel)
    (gp, _), (rp, _) = trajectory(RECIPES[name], "foreach"), trajectory(RECIPES[name], "per_param")
    for a, b in zip(gp, rp):
        assert torch.equal(a, b)


def test_buckets_cover_the_group_in_order_within_the_size_limit(monkeypatch):
    monkeypatch.setattr(dispatch, "CPU_BUCKET_NUMEL", 10)
    params = [torch.zeros(n) for n in (4, 5, 3, 20, 1, 1)]
    spans = [(b.start, b.stop) for b in dispatch.buckets(params)]
    assert spans == [(0, 2), (2, 3), (3, 4), (4, 6)]  # a tensor over the limit goes alone


def test_radam_runs_both_branches_in_the_trajectory():
    """Guard for the test above: the RAdam trajectory crosses r = 5 (steps 1-5 are unrectified)."""
    sqr_mom = 0.99
    r_inf = 2 / (1 - sqr_mom) - 1
    r = [r_inf - 2 * t * sqr_mom**t / (1 - sqr_mom**t) for t in range(1, 10)]
    assert min(r) <= 5 < max(r)


@pytest.mark.parametrize("impl", ["composed", "auto"])
def test_each_parameter_keeps_its_own_step_count(impl):
    """A parameter that missed steps is debiased with its own count (float64 Adam by hand)."""
    lr, mom, sqr_mom, eps = 0.01, 0.9, 0.99, 1e-5
    (params, opt) = trajectory(partial(recipes.Adam, lr=lr, wd=0.0), impl, schedule=False)
    steps = [int(opt.state[p]["step"]) for p in params]
    assert steps[3] == 9 - 3 and steps[0] == 9

    # Replay parameter 3 alone in float64 with the published Adam update.
    gen = torch.Generator().manual_seed(1)
    init = [torch.randn(s, generator=gen) for s in SHAPES]
    w = init[3].double()
    m = torch.zeros_like(w)
    v = torch.zeros_like(w)
    t = 0
    for k in range(9):
        grads = [torch.randn(s, generator=gen) for s in SHAPES]
        if k % NO_GRAD_EVERY == 1:
            continue
        g = grads[3].double()
        t += 1
        m = mom * m + (1 - mom) * g
        v = sqr_mom * v + (1 - sqr_mom) * g * g
        w = w - lr * (m / (1 - mom**t)) / ((v / (1 - sqr_mom**t)).sqrt() + eps)
    torch.testing.assert_close(params[3].detach().double(), w, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("impl", ["foreach", "auto"])
def test_do_wd_false_exempts_a_parameter_from_weight_decay(impl):
    """With zero gradients SGD only decays: p * (1 - lr * wd), except where do_wd=False."""
    lr, wd = 0.1, 0.5
    params = [torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(2))]
    for decouple in (True, False):
        for p in params:
            p.data.fill_(1.0)
        opt = recipes.SGD(params, lr=lr, wd=wd, decouple_wd=decouple, impl=impl)
        opt.state[params[1]]["do_wd"] = False
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
        assert torch.equal(params[0].detach(), torch.full((4,), 1 - lr * wd))
        assert torch.equal(params[1].detach(), torch.ones(2))


@settings(max_examples=15, deadline=None)
@given(
    shapes=st.lists(
        st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple), min_size=1, max_size=4
    ),
    lr=st.floats(1e-4, 1e-1),
    mom=st.floats(0.0, 0.95),
    sqr_mom=st.floats(0.9, 0.999),
    wd=st.floats(0.0, 0.1),
    seed=st.integers(0, 2**16),
)
def test_composed_adam_equals_torch_adamw(shapes, lr, mom, sqr_mom, wd, seed):
    """impl="composed" Adam (multi-tensor) equals torch.optim.AdamW after 20 steps, float32."""
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(20)]

    ours = run(
        lambda ps: recipes.Adam(ps, lr=lr, mom=mom, sqr_mom=sqr_mom, wd=wd, impl="composed"),
        init,
        grads,
    )
    ref = run(
        lambda ps: torch.optim.AdamW(
            ps, lr=lr, betas=(mom, sqr_mom), eps=1e-5, weight_decay=wd, foreach=False
        ),
        init,
        grads,
    )
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@settings(max_examples=10, deadline=None)
@given(
    lr=st.floats(1e-3, 1e-1),
    mom=st.floats(0.0, 0.95),
    sqr_mom=st.floats(0.5, 0.999),
    seed=st.integers(0, 2**16),
)
def test_foreach_sgd_and_rmsprop_equal_torch(lr, mom, sqr_mom, seed):
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=gen) for s in SHAPES]
    grads = [[torch.randn(s, generator=gen) for s in SHAPES] for _ in range(15)]

    pairs = [
        (
            lambda ps: recipes.SGD(ps, lr=lr, mom=mom, impl="foreach"),
            lambda ps: torch.optim.SGD(ps, lr=lr, momentum=mom, foreach=False),
        ),
        (
            lambda ps: recipes.RMSProp(ps, lr=lr, sqr_mom=sqr_mom, impl="foreach"),
            lambda ps: torch.optim.RMSprop(ps, lr=lr, alpha=sqr_mom, eps=1e-8, foreach=False),
        ),
    ]
    for ours, theirs in pairs:
        for a, b in zip(run(ours, init, grads), run(theirs, init, grads)):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


# -- mixing per-parameter callbacks with multi-tensor forms ----------------------------------


def _hidden(cb: Callable) -> Callable:
    """The same callback as a plain function the registry does not know: no multi-tensor form."""

    def per_param_only(p, **kwargs):
        return cb(p, **kwargs)

    per_param_only.defaults = getattr(cb, "defaults", {})
    return per_param_only


ADAM_CBS = [cbs_mod.weight_decay, partial(cbs_mod.average_grad, dampening=True)]
ADAM_CBS += [cbs_mod.average_sqr_grad, cbs_mod.step_stat, cbs_mod.adam_step]
LAMB_CBS = ADAM_CBS[:-1] + [cbs_mod.lamb_step]


@settings(max_examples=12, deadline=None)
@given(
    hide=st.lists(st.booleans(), min_size=5, max_size=5),
    lamb=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_callback_major_with_any_mix_of_forms_equals_per_param(hide, lamb, seed):
    """Any subset of callbacks stripped of their forms: callback-major == parameter-major."""
    pipeline = LAMB_CBS if lamb else ADAM_CBS
    mixed = [_hidden(cb) if h else cb for cb, h in zip(pipeline, hide)]
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=gen) for s in SHAPES]
    grads = [[torch.randn(s, generator=gen) for s in SHAPES] for _ in range(4)]
    hypers = dict(lr=0.01, mom=0.9, sqr_mom=0.99, eps=1e-6, wd=0.1)

    def trained(executor, cbs):
        ps = [x.clone() for x in init]
        states = [{} for _ in ps]
        states[NO_WD]["do_wd"] = False
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad = g.clone()
            executor(ps, states, hypers)
        return ps

    ref = trained(PerParam(pipeline), pipeline)
    got = trained(Composed(mixed), mixed)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_composed_falls_back_per_parameter_for_a_user_callback_only():
    """A user callback without a form runs per parameter; the built-ins stay multi-tensor."""
    calls = {"user": 0, "adam_form": 0}

    def clip_grad(p, max_abs, **kwargs):  # a user callback: per-parameter only
        calls["user"] += 1
        p.grad.clamp_(-max_abs, max_abs)

    clip_grad.defaults = dict(max_abs=0.5)
    builtin = cbs_mod.adam_step.foreach

    def counting_adam(p, **kwargs):
        return cbs_mod.adam_step(p, **kwargs)

    def counting_form(params, states, **hypers):
        calls["adam_form"] += 1
        builtin(params, states, **hypers)

    counting_adam.foreach = counting_form
    counting_adam.defaults = cbs_mod.adam_step.defaults
    pipeline = [clip_grad, *ADAM_CBS[:-1], counting_adam]

    def make(ps, impl):
        return AccelOptimizer(ps, pipeline, impl=impl, lr=0.01, mom=0.9, sqr_mom=0.99, wd=0.1)

    ref = trajectory(make, "per_param", steps=4, schedule=False)
    calls.update(user=0, adam_form=0)
    got = trajectory(make, "composed", steps=4, schedule=False)
    assert_same_run(got, ref)
    assert calls["adam_form"] == 4  # one multi-tensor call per step (one group)
    assert calls["user"] == 4 * len(SHAPES) - 1  # per parameter with a gradient


def test_auto_with_no_form_at_all_is_the_reference_loop():
    def my_step(p, lr, **kwargs):
        p.sub_(lr * p.grad)

    assert isinstance(executor_for("auto", [my_step]), PerParam)
    assert isinstance(executor_for("auto", ADAM_CBS), Composed)


def test_a_user_foreach_attribute_is_used_by_foreach_and_auto():
    seen = []

    def scale_grad(p, factor, **kwargs):
        p.grad.mul_(factor)

    def scale_grad_foreach(params, states, factor, **hypers):
        seen.append(len(params))
        torch._foreach_mul_([p.grad for p in params], factor)

    scale_grad.foreach = scale_grad_foreach
    pipeline = [scale_grad, cbs_mod.sgd_step]
    assert foreach_form(scale_grad) is scale_grad_foreach
    for impl in ("foreach", "composed", "auto"):
        ps = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))]
        opt = AccelOptimizer(ps, pipeline, impl=impl, lr=0.5, factor=2.0)
        for p in ps:
            p.grad = torch.ones_like(p)
        opt.step()
        for p in ps:  # 1 - lr * (factor * 1)
            assert torch.equal(p.detach(), torch.zeros_like(p))
    assert seen == [2, 2, 2]


def test_foreach_form_of_a_partial_carries_its_keywords():
    """partial(average_grad, dampening=True) must damp in its multi-tensor form too."""
    cb = partial(cbs_mod.average_grad, dampening=True)
    p = torch.ones(3)
    p.grad = torch.full((3,), 2.0)
    states = [{}]
    foreach_form(cb)([p], states, mom=0.75)
    assert torch.equal(states[0]["grad_avg"], torch.full((3,), 0.25 * 2.0))
    # Positional arguments would bind `p` itself: no multi-tensor analogue.
    assert foreach_form(partial(cbs_mod.sgd_step, torch.ones(1))) is None


def test_every_builtin_callback_has_its_form_beside_it():
    """One home per callback: its multi-tensor form is defined in the callback's own module."""
    builtins = [getattr(cbs_mod, n) for n in cbs_mod.__all__ if n != "debias"]
    for cb in builtins:
        form = foreach_form(cb)
        assert form is not None, cb.__name__
        assert form.__module__ == base_function(cb).__module__, cb.__name__


def test_executors_accept_an_empty_group():
    for impl in ("per_param", "composed", "foreach", "auto"):
        executor_for(impl, ADAM_CBS)([], [], dict(lr=0.1))


# -- errors -------------------------------------------------------------------------------------


def test_unknown_impl_is_rejected_with_the_allowed_values():
    with pytest.raises(ValueError, match=r"impl must be one of .*'auto'.*'compiled'.*'fast'"):
        executor_for("fast", ADAM_CBS)
    with pytest.raises(ValueError, match="impl must be one of"):
        recipes.Adam([torch.nn.Parameter(torch.ones(2))], lr=0.1, impl="Foreach")


@pytest.mark.parametrize("impl", ["foreach", "compiled"])
def test_strict_impls_name_the_callbacks_without_a_form(impl):
    def my_step(p, lr, **kwargs):
        p.sub_(lr * p.grad)

    with pytest.raises(ValueError, match=rf"impl='{impl}'.*\['my_step'\].*impl='auto'"):
        AccelOptimizer([torch.nn.Parameter(torch.ones(2))], [my_step], impl=impl, lr=0.1)
