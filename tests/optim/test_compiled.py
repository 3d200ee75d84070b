"""impl="compiled": same numbers as the per-parameter loop, no recompiles under schedules.

Most recipes are traced with torch.compile's "aot_eager" backend (the same Dynamo capture,
guards and functionalisation, without C++ code generation) to keep the suite fast; Adam and LAMB
also run through the real inductor backend, which is what impl="compiled" uses by default.
"""

from __future__ import annotations

import copy
import pickle
from functools import partial

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters
from torch.utils.data import DataLoader, TensorDataset

from lightning_accel.optim import compiled, recipes
from lightning_accel.optim.callbacks import sgd_step
from lightning_accel.optim.compiled import CompiledExecutor, compile_unavailable_reason
from lightning_accel.optim.optimizer import AccelOptimizer

from .. import tiny
from .helpers import Regression, resumed_across_impls, run
from .test_dispatch import LOOSE, RECIPES, SHAPES, assert_same_run, trajectory

pytestmark = pytest.mark.skipif(
    compile_unavailable_reason(torch.device("cpu")) is not None,
    reason=f"torch.compile unavailable: {compile_unavailable_reason(torch.device('cpu'))}",
)


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setattr(compiled, "DEFAULT_BACKEND", "aot_eager")


# One program serves every parameter whatever its size; it is specialised only where the math or
# the guards differ: here for the parameter flagged do_wd=False and the one-element parameter.
MAX_PROGRAMS = 3


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_matches_per_param_traced(name, aot_eager):
    """lr and mom change every step, one parameter misses steps: no program per schedule value."""
    ref = trajectory(RECIPES[name], "per_param")
    before = graphs()
    got = trajectory(RECIPES[name], "compiled")
    assert_same_run(got, ref, rtol=LOOSE.get(name, 1e-5))
    assert graphs() - before <= MAX_PROGRAMS


@pytest.mark.parametrize("name", ["Adam", "Lamb"])
def test_inductor_matches_per_param_and_does_not_recompile(name):
    """Real generated code; lr and mom change before every step, one parameter misses steps."""
    before = graphs()
    ref = trajectory(RECIPES[name], "per_param", steps=7)
    got = trajectory(RECIPES[name], "compiled", steps=7)
    assert_same_run(got, ref, rtol=LOOSE.get(name, 1e-5))
    assert 1 <= graphs() - before <= MAX_PROGRAMS


@pytest.mark.parametrize("name", ["Adam", "RAdam", "Lamb"])
def test_a_parameter_joining_late_is_stepped_like_per_param(name, aot_eager):
    """Parameter 3 gets its first gradient at step 4, when the others' state is already compiled
    (tensor step counts): that step runs eagerly with mixed counts, later ones compiled."""
    ref = trajectory(RECIPES[name], "per_param", late=True)
    got = trajectory(RECIPES[name], "compiled", late=True)
    assert_same_run(got, ref, rtol=LOOSE.get(name, 1e-5))


def test_inductor_adam_equals_torch_fused_adamw():
    lr, betas, eps, wd = 1e-2, (0.9, 0.99), 1e-5, 0.01
    gen = torch.Generator().manual_seed(3)
    init = [torch.randn(s, generator=gen) for s in SHAPES]
    grads = [[torch.randn(s, generator=gen) for s in SHAPES] for _ in range(6)]
    runs = [
        run(make, init, grads)
        for make in (
            lambda ps: recipes.Adam(ps, lr=lr, mom=betas[0], sqr_mom=betas[1], impl="compiled"),
            lambda ps: torch.optim.AdamW(
                ps, lr=lr, betas=betas, eps=eps, weight_decay=wd, fused=True
            ),
        )
    ]
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_schedule_changes_every_hyper_parameter_without_recompiling(aot_eager):
    """Every hyper-parameter of the group (lr, mom, sqr_mom, eps, wd) changes every step."""
    params = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
    opt = recipes.Adam(params, lr=1e-2, impl="compiled")
    for t in range(6):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.set_hypers(lr=1e-2 / (t + 1), mom=0.9 - 0.01 * t, sqr_mom=0.99 - 0.001 * t)
        opt.set_hypers(eps=10.0 ** -(5 + t), wd=0.01 * t)
        opt.step()
        if t == 1:  # step 0 is eager, step 1 compiles the one program
            after_first_compile = graphs()
    assert graphs() == after_first_compile


def test_programs_are_shared_by_optimizers_running_the_same_pipeline(aot_eager):
    """A fresh optimizer (say after lr_find) with the same recipe and shapes compiles nothing."""
    trajectory(RECIPES["QHAdam"], "compiled", steps=4)
    before = graphs()
    trajectory(RECIPES["QHAdam"], "compiled", steps=4)
    assert graphs() == before


def test_step_counts_stay_integers_like_under_every_other_impl(aot_eager):
    """The program takes step counts as symbolic integers: the state keeps the chapter's types."""
    params, opt = trajectory(RECIPES["Adam"], "compiled", steps=3, schedule=False)
    assert type(opt.state[params[0]]["step"]) is int and opt.state[params[0]]["step"] == 3
    assert opt.state[params[1]]["do_wd"] is False


def _count_calls(monkeypatch) -> list[int]:
    calls = []
    original = compiled._Program.__call__

    def counting(self, params, states, hypers):
        calls.append(params[0].numel())
        return original(self, params, states, hypers)

    monkeypatch.setattr(compiled._Program, "__call__", counting)
    return calls


def _run(make, impl, shapes, steps=3, no_wd=()):
    gen = torch.Generator().manual_seed(2)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    opt = make(params, impl=impl)
    for i in no_wd:
        opt.state[params[i]]["do_wd"] = False
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return params, opt


def test_small_parameters_run_together_in_one_call(aot_eager, monkeypatch):
    """Element-wise pipelines: parameters below SMALL_NUMEL with equal state (flags, step
    counts) run concatenated, the others one call each; the numbers are the reference loop's."""
    monkeypatch.setattr(compiled, "SMALL_NUMEL", 10)
    calls = _count_calls(monkeypatch)
    shapes = [(3, 4), (5,), (2, 2), (7,), (1,), (3,)]
    make = RECIPES["Adam"]
    got = _run(make, "compiled", shapes, no_wd=[5])
    assert_same_run(got, _run(make, "per_param", shapes, no_wd=[5]), rtol=1e-5)
    # Steps 2 and 3 (step 1 is eager): (3, 4) alone; (5,), (2, 2), (7,), (1,) together; (3,) has
    # do_wd=False, a state of its own.
    assert sorted(calls) == [3, 3, 12, 12, 17, 17]


def test_pipelines_that_reduce_over_a_parameter_run_one_parameter_per_call(aot_eager, monkeypatch):
    calls = _count_calls(monkeypatch)
    shapes = [(3, 4), (5,), (2, 2), (7,)]
    got = _run(RECIPES["Lamb"], "compiled", shapes, steps=2)
    assert_same_run(got, _run(RECIPES["Lamb"], "per_param", shapes, steps=2), rtol=1e-5)
    assert sorted(calls) == [4, 5, 7, 12]


def test_parameters_laid_out_unlike_contiguous_tensors_are_stepped_correctly(aot_eager):
    """channels_last weights and gradients, a transposed weight, a gradient laid out unlike its
    parameter: flat views where the layouts agree, shaped tensors where they do not."""

    def make():
        gen = torch.Generator().manual_seed(4)
        conv = torch.randn(4, 3, 2, 2, generator=gen).to(memory_format=torch.channels_last)
        params = [
            torch.nn.Parameter(conv),
            torch.nn.Parameter(torch.randn(6, 5, generator=gen).t()),
            torch.nn.Parameter(torch.randn(3, 4, generator=gen)),
        ]
        return params, gen

    def trained(impl):
        params, gen = make()
        opt = recipes.Adam(params, lr=1e-2, impl=impl)
        for _ in range(4):
            params[0].grad = torch.randn(4, 3, 2, 2, generator=gen).to(
                memory_format=torch.channels_last
            )
            params[1].grad = torch.randn(6, 5, generator=gen).t()
            params[2].grad = torch.randn(4, 3, generator=gen).t()
            opt.step()
        return params, opt

    got, ref = trained("compiled"), trained("per_param")
    for a, b in zip(got[0], ref[0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        assert a.stride() == b.stride()
    for a, b in zip(got[0], ref[0]):
        torch.testing.assert_close(got[1].state[a]["sqr_avg"], ref[1].state[b]["sqr_avg"])


def test_a_copied_or_pickled_optimizer_keeps_stepping_identically(aot_eager):
    params, opt = trajectory(RECIPES["Adam"], "compiled", steps=3, schedule=False)
    twin_params, twin = copy.deepcopy((params, opt))
    assert isinstance(pickle.loads(pickle.dumps(opt._executor)), CompiledExecutor)
    for a, b in zip(params, twin_params):
        a.grad = torch.ones_like(a)
        b.grad = torch.ones_like(b)
    opt.step()
    twin.step()
    for a, b in zip(params, twin_params):
        assert torch.equal(a, b)


def test_unavailable_torch_compile_fails_clearly_and_changes_nothing(monkeypatch):
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    with pytest.raises(RuntimeError, match=r"impl='compiled' cannot be used.*impl='auto'"):
        recipes.Adam([torch.nn.Parameter(torch.ones(2))], lr=0.1, impl="compiled")


def test_missing_cpp_compiler_fails_before_touching_parameters(monkeypatch):
    p = torch.nn.Parameter(torch.ones(3))
    opt = recipes.Adam([p], lr=0.1, impl="compiled")
    monkeypatch.setenv("CXX", "")
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    p.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match="C\\+\\+ compiler"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(3)) and not opt.state[p]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_per_param():
    def trained(impl):
        gen = torch.Generator().manual_seed(5)
        ps = [torch.nn.Parameter(torch.randn(s, generator=gen).cuda()) for s in SHAPES]
        opt = recipes.Adam(ps, lr=1e-2, impl=impl)
        for t in range(5):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen).cuda()
            opt.set_hyper("lr", 1e-2 / (t + 1))
            opt.step()
        return [p.detach().cpu() for p in ps]

    for a, b in zip(trained("compiled"), trained("per_param")):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_user_callback_with_a_traceable_form_compiles(aot_eager):
    def scale_grad(p, factor, **kwargs):
        p.grad.mul_(factor)

    def scale_grad_foreach(params, states, factor, **hypers):
        torch._foreach_mul_([p.grad for p in params], factor)

    scale_grad.foreach = scale_grad_foreach
    pipeline = [scale_grad, sgd_step]
    results = []
    for impl in ("per_param", "compiled"):
        ps = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))]
        opt = AccelOptimizer(ps, pipeline, impl=impl, lr=0.1, factor=2.0)
        for t in range(3):
            for p in ps:
                p.grad = torch.full_like(p, float(t))
            opt.set_hyper("factor", 1.0 + t)
            opt.step()
        results.append(ps)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(("first", "then"), [("compiled", "per_param"), ("per_param", "compiled")])
def test_a_checkpoint_resumes_under_another_impl(first, then, aot_eager):
    """state_dict from one impl loads into another (tensor or int step counts alike) and the run
    continues as if uninterrupted under per_param."""
    ps, ref_ps = resumed_across_impls(recipes.RAdam, first, then, SHAPES)
    for a, b in zip(ps, ref_ps):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("impl", ["auto", "compiled"])
def test_a_lightning_trainer_steps_every_impl_like_per_param(impl, tmp_path, aot_eager):
    """Lightning's automatic optimization (step with a closure) and a torch scheduler writing
    lr and betas every step: the weights match the per-parameter run, with no recompiles."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=gen)
    y = x @ torch.randn(4, 1, generator=gen)
    models = {}
    for run_impl in ("per_param", impl):
        model = Regression(partial(recipes.Adam, lr=0.01, impl=run_impl), one_cycle_steps=8)
        trainer = tiny.trainer(tmp_path, max_epochs=1)
        before = graphs()
        trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=4))
        models[run_impl] = model
    # One program for the whole schedule (none if cached), and one for the one-element bias.
    assert graphs() - before <= 2
    for a, b in zip(models[impl].parameters(), models["per_param"].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
