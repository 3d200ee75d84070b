"""impl="auto" routes the runs of a pipeline that torch's fused kernels compute to those kernels.

Recognition is by callbacks and bound arguments, never by recipe; the numbers are the reference
loop's over 100 steps of schedules; what a kernel cannot take (flags, unusual state, hyper-
parameters that change the meaning) still gets the reference numbers through the forms.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from lightning_accel.optim import AccelOptimizer, recipes
from lightning_accel.optim.dispatch import Composed, executor_for
from lightning_accel.optim.fused import FusedRun
from lightning_accel.optim.stats import average_grad, average_sqr_grad, step_stat
from lightning_accel.optim.steps import adam_step, l2_reg, momentum_step, sgd_step, weight_decay

from .helpers import resumed_across_impls, run

ADAM_STATS = [partial(average_grad, dampening=True), average_sqr_grad, step_stat]
KERNELS = ("_fused_sgd_", "_fused_adam_", "_fused_adamw_")


def runs(cbs, impl="auto"):
    """[(kind, decay, number of callbacks)] of the fused runs the executor found."""
    executor = executor_for(impl, cbs)
    segments = executor.segments if isinstance(executor, Composed) else []
    return [(s.kind, s.decay, len(s.cbs)) for s in segments if isinstance(s, FusedRun)]


def user_clip(p, clip=1.0, **kwargs):
    """A user callback: the gradient clipped by value."""
    p.grad.data.clamp_(-clip, clip)


# -- recognition --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cbs", "expected"),
    [
        ([sgd_step], [("sgd", None, 1)]),
        ([weight_decay, sgd_step], [("sgd", "decoupled", 2)]),
        ([l2_reg, sgd_step], [("sgd", "l2", 2)]),
        ([average_grad, momentum_step], [("sgd_momentum", None, 2)]),
        ([weight_decay, average_grad, momentum_step], [("sgd_momentum", "decoupled", 3)]),
        ([partial(average_grad, dampening=True), momentum_step], [("sgd_momentum", None, 2)]),
        ([*ADAM_STATS, adam_step], [("adam", None, 4)]),
        ([weight_decay, *ADAM_STATS, adam_step], [("adam", "decoupled", 5)]),
        ([l2_reg, *ADAM_STATS, adam_step], [("adam", "l2", 5)]),
        # A user's own pipeline, the stats in another order.
        (
            [step_stat, average_sqr_grad, partial(average_grad, dampening=True), adam_step],
            [("adam", None, 4)],
        ),
    ],
)
def test_pipelines_are_recognised_by_their_callbacks(cbs, expected):
    assert runs(cbs) == expected


@pytest.mark.parametrize(
    "make",
    [
        partial(recipes.RMSProp, lr=0.1),
        partial(recipes.RAdam, lr=0.1),
        partial(recipes.QHAdam, lr=0.1),
        partial(recipes.Larc, lr=0.1),
        partial(recipes.Lamb, lr=0.1),
    ],
)
def test_recipes_without_a_torch_kernel_run_composed(make):
    assert runs(make([torch.nn.Parameter(torch.ones(2))]).cbs) == []


def test_recognition_follows_the_recipes_bound_arguments_not_their_names():
    ps = [torch.nn.Parameter(torch.ones(2))]
    assert runs(recipes.Adam(ps, lr=0.1).cbs) == [("adam", "decoupled", 5)]
    assert runs(recipes.Adam(ps, lr=0.1, decouple_wd=False).cbs) == [("adam", "l2", 5)]
    assert runs(recipes.SGD(ps, lr=0.1, mom=0.9).cbs) == [("sgd_momentum", "decoupled", 3)]


def copy_of_adam_step(p, lr, mom, step, sqr_mom, grad_avg, sqr_avg, eps, **kwargs):
    return adam_step(p, lr, mom, step, sqr_mom, grad_avg, sqr_avg, eps)


@pytest.mark.parametrize(
    "cbs",
    [
        [partial(average_grad, dampening=False), average_sqr_grad, step_stat, adam_step],
        [*ADAM_STATS[:1], partial(average_sqr_grad, dampening=False), step_stat, adam_step],
        [*ADAM_STATS, copy_of_adam_step],  # same math, but a user's function
        [*ADAM_STATS[:2], adam_step],  # no step count
        [partial(sgd_step, torch.ones(1))],  # a positional argument binds `p` itself
        [average_grad, user_clip, momentum_step],  # a user callback inside the run
    ],
)
def test_anything_else_is_not_recognised(cbs):
    assert runs(cbs) == []


def test_user_callbacks_around_a_run_leave_it_fused_and_run_as_themselves():
    assert runs([user_clip, weight_decay, *ADAM_STATS, adam_step, user_clip]) == [
        ("adam", "decoupled", 5)
    ]
    # l2_reg changes p.grad, which the kernel does not: not fused when a callback follows.
    assert runs([l2_reg, *ADAM_STATS, adam_step, user_clip]) == [("adam", None, 4)]
    assert runs([l2_reg, sgd_step, user_clip]) == [("sgd", None, 1)]


@pytest.mark.parametrize("impl", ["composed", "foreach", "per_param"])
def test_only_auto_uses_the_kernels(impl):
    assert runs([weight_decay, *ADAM_STATS, adam_step], impl) == []


# -- numbers ------------------------------------------------------------------------------------

SHAPES = [(3, 4), (5,), (2, 3, 2), (1,), (7,), (64, 33)]
NO_WD, NO_GRAD = 1, 3  # parameter 1 has do_wd=False, parameter 3 misses every third step

PIPELINES = {
    "SGD": partial(recipes.SGD, lr=0.1, wd=0.1),
    "SGD-l2": partial(recipes.SGD, lr=0.1, wd=0.1, decouple_wd=False),
    "SGD-mom": partial(recipes.SGD, lr=0.01, mom=0.9),
    "SGD-mom-wd": partial(recipes.SGD, lr=0.01, mom=0.9, wd=0.1),
    "SGD-mom-l2": partial(recipes.SGD, lr=0.01, mom=0.9, wd=0.1, decouple_wd=False),
    "SGD-mom-damped": lambda ps, impl: AccelOptimizer(
        ps, [partial(average_grad, dampening=True), momentum_step], impl=impl, lr=0.01, mom=0.9
    ),
    "Adam": partial(recipes.Adam, lr=0.01),
    "Adam-l2": partial(recipes.Adam, lr=0.01, wd=0.1, decouple_wd=False),
    "Adam-user": lambda ps, impl: AccelOptimizer(
        ps, [*reversed(ADAM_STATS), adam_step], impl=impl, lr=0.01, mom=0.9, sqr_mom=0.99
    ),
    "AdamW-user-clip": lambda ps, impl: AccelOptimizer(
        ps,
        [user_clip, weight_decay, *ADAM_STATS, adam_step],
        impl=impl,
        lr=0.01,
        mom=0.9,
        sqr_mom=0.99,
        wd=0.1,
        clip=1.5,
    ),
}


def trajectory(make, impl, steps=100, dtype=torch.float32):
    """`steps` steps with lr and mom changed before each (a schedule), flags and a parameter
    that misses steps; returns (params, optimizer)."""
    gen = torch.Generator().manual_seed(1)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in SHAPES]
    opt = make(params, impl=impl)
    opt.state[params[NO_WD]]["do_wd"] = False
    base = dict(opt.hypers[0])
    for t in range(steps):
        for i, p in enumerate(params):
            missing = i == NO_GRAD and t % 3 == 1
            p.grad = None if missing else torch.randn(p.shape, generator=gen, dtype=dtype)
        opt.set_hyper("lr", base["lr"] * (1 + 0.5 * math.sin(t)))
        if base.get("mom"):
            opt.set_hyper("mom", base["mom"] * (1 - 0.001 * t))
        opt.step()
    return params, opt


def assert_close_to_scale(got, ref, rtol):
    """|got - ref| <= rtol * max|ref|, tensor by tensor: float32 rounding at the tensor's scale
    (an element near zero may differ by more than rtol of itself)."""
    for a, b in zip(got, ref):
        assert (a - b).abs().max() <= rtol * b.abs().max(), (a - b).abs().max() / b.abs().max()


@pytest.fixture
def kernel_calls(monkeypatch):
    calls = dict.fromkeys(KERNELS, 0)
    for name in KERNELS:
        kernel = getattr(torch, name)

        def counting(*args, _kernel=kernel, _name=name, **kwargs):
            calls[_name] += 1
            return _kernel(*args, **kwargs)

        monkeypatch.setattr(torch, name, counting)
    return calls


@pytest.mark.parametrize("name", list(PIPELINES))
def test_auto_gives_the_reference_numbers_over_100_scheduled_steps(name, kernel_calls):
    """Within 1e-6 of the per-parameter reference, weights and state, with lr and mom changed
    every step, a do_wd=False parameter and a parameter that misses steps."""
    (got, got_opt), (ref, ref_opt) = (
        trajectory(PIPELINES[name], "auto"),
        trajectory(PIPELINES[name], "per_param"),
    )
    assert sum(kernel_calls.values()) >= 100  # the kernels did the work
    assert_close_to_scale(got, ref, 1e-6)
    for a, b in zip(got, ref):
        sa, sb = got_opt.state[a], ref_opt.state[b]
        assert sa.keys() == sb.keys()  # the chapter's state, as the reference keeps it
        for key, value in sb.items():
            if torch.is_tensor(value):
                assert_close_to_scale([sa[key]], [value], 1e-6)
            else:
                assert sa[key] == value and type(sa[key]) is type(value)


@pytest.mark.parametrize(
    ("name", "torch_opt"),
    [
        (
            "SGD-mom-l2",
            lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, weight_decay=0.1, fused=True),
        ),
        (
            "Adam",
            lambda ps: torch.optim.AdamW(
                ps, lr=0.01, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01, fused=True
            ),
        ),
        (
            "Adam-l2",
            lambda ps: torch.optim.Adam(
                ps, lr=0.01, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.1, fused=True
            ),
        ),
    ],
)
def test_auto_equals_torchs_own_fused_optimizer_bit_for_bit(name, torch_opt):
    gen = torch.Generator().manual_seed(3)
    init = [torch.randn(s, generator=gen) for s in SHAPES]
    grads = [[torch.randn(s, generator=gen) for s in SHAPES] for _ in range(20)]
    finals = [run(make, init, grads) for make in (partial(PIPELINES[name], impl="auto"), torch_opt)]
    for a, b in zip(*finals):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_float_dtypes_take_the_kernels_too(dtype, kernel_calls):
    got, _ = trajectory(PIPELINES["Adam"], "auto", steps=10, dtype=dtype)
    ref, _ = trajectory(PIPELINES["Adam"], "per_param", steps=10, dtype=dtype)
    assert kernel_calls["_fused_adamw_"] > 0
    assert_close_to_scale(got, ref, 1e-12 if dtype == torch.float64 else 1e-2)


def test_frozen_parameters_stay_as_they_are():
    body, head = torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)
    opt = recipes.Adam([list(body.parameters()), list(head.parameters())], lr=0.1)
    opt.freeze()
    before = [p.detach().clone() for p in body.parameters()]
    for _ in range(3):
        head(body(torch.randn(4, 3))).sum().backward()
        opt.step()
        opt.zero_grad()
    assert all(torch.equal(a, b) for a, b in zip(before, body.parameters()))
    assert all(opt.state[p]["step"] == 3 for p in head.parameters())


# -- what the kernels cannot take ---------------------------------------------------------------


def _two_runs(make, prepare, steps=5):
    """The same run under "auto" and "per_param", `prepare(opt, params)` applied to both."""
    out = []
    for impl in ("auto", "per_param"):
        gen = torch.Generator().manual_seed(5)
        ps = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]
        opt = make(ps, impl=impl)
        prepare(opt, ps)
        for _ in range(steps):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        out.append((ps, opt))
    return out


def test_a_group_dampening_that_changes_adams_meaning_runs_composed(kernel_calls):
    """`dampening=False` in a group overrides partial(average_grad, dampening=True): not Adam."""
    (got, _), (ref, _) = _two_runs(
        PIPELINES["Adam"], lambda opt, ps: opt.param_groups[0].update(dampening=False)
    )
    assert kernel_calls["_fused_adamw_"] == 0
    assert_close_to_scale(got, ref, 1e-6)


def test_momentum_zero_runs_composed_and_keeps_grad_avg(kernel_calls):
    (got, got_opt), (ref, ref_opt) = _two_runs(
        PIPELINES["SGD-mom"], lambda opt, ps: opt.set_hyper("mom", 0.0)
    )
    assert kernel_calls["_fused_sgd_"] == 0
    assert_close_to_scale(got, ref, 1e-6)
    for a, b in zip(got, ref):
        assert torch.equal(got_opt.state[a]["grad_avg"], ref_opt.state[b]["grad_avg"])


def test_a_gradient_laid_out_unlike_its_parameter_runs_composed():
    def trained(impl):
        gen = torch.Generator().manual_seed(6)
        p = torch.nn.Parameter(torch.randn(3, 4, generator=gen))
        opt = recipes.Adam([p], lr=0.1, impl=impl)
        for _ in range(3):
            p.grad = torch.randn(4, 3, generator=gen).t()  # transposed memory layout
            opt.step()
        return p

    assert_close_to_scale([trained("auto")], [trained("per_param")], 1e-6)


@pytest.mark.parametrize(("first", "then"), [("auto", "per_param"), ("per_param", "auto")])
def test_checkpoints_move_between_auto_and_the_reference_loop(first, then):
    ps, ref_ps = resumed_across_impls(recipes.Adam, first, then, SHAPES)
    assert_close_to_scale(ps, ref_ps, 1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["SGD-mom-wd", "Adam", "Adam-l2"])
@pytest.mark.parametrize("impl", ["auto", "composed"])
def test_cuda_gives_the_reference_numbers(name, impl, kernel_calls):
    def trained(impl):
        gen = torch.Generator().manual_seed(5)
        ps = [torch.nn.Parameter(torch.randn(s, generator=gen).cuda()) for s in SHAPES]
        opt = PIPELINES[name](ps, impl=impl)
        for t in range(20):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen).cuda()
            opt.set_hyper("lr", opt.hypers[0]["lr"] * (1 + 0.1 * math.sin(t)))
            opt.step()
        return [p.detach().cpu() for p in ps]

    got, ref = trained(impl), trained("per_param")
    assert (sum(kernel_calls.values()) > 0) == (impl == "auto")
    assert_close_to_scale(got, ref, 1e-6)
