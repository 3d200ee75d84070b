"""AccelOptimizer's bookkeeping: parameter groups, hyper-parameters, freezing, skipping, errors."""

import copy
import pickle
from functools import partial

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lightning_accel.optim import (
    AccelOptimizer,
    Adam,
    Lookahead,
    average_grad,
    momentum_step,
    sgd_step,
    weight_decay,
)

SGD_MOM = [weight_decay, average_grad, momentum_step]


def _params(*shapes):
    return [torch.randn(s, requires_grad=True) for s in shapes]


def _give_grads(params, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)


# -- parameters and groups ---------------------------------------------------------------


def test_params_as_tensors_make_one_group():
    model = nn.Linear(3, 2)
    opt = AccelOptimizer(model.parameters(), [sgd_step], lr=0.1)
    assert len(opt.param_groups) == 1
    assert opt.param_groups[0]["params"] == list(model.parameters())


def test_params_as_list_of_lists_make_one_group_each():
    body, head = _params((3, 3), (3,)), _params((2, 3))
    opt = AccelOptimizer([body, head], [sgd_step], lr=0.1)
    assert [g["params"] for g in opt.param_groups] == [body, head]


def test_params_as_dicts_keep_their_own_hyper_parameters():
    a, b = _params((2,), (2,))
    opt = AccelOptimizer([{"params": [a], "lr": 0.5}, {"params": [b]}], [sgd_step], lr=0.1)
    assert [h["lr"] for h in opt.hypers] == [0.5, 0.1]
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    a0, b0 = a.detach().clone(), b.detach().clone()
    opt.step()
    assert torch.equal(a.detach(), a0 - 0.5) and torch.equal(b.detach(), b0 - 0.1)


def test_torch_style_dict_with_betas_sets_mom_and_sqr_mom():
    (a,) = _params((2,))
    opt = Adam([{"params": [a], "betas": (0.8, 0.95)}], lr=0.1)
    assert opt.hypers[0]["mom"] == 0.8 and opt.hypers[0]["sqr_mom"] == 0.95


@pytest.mark.parametrize(
    "params, error",
    [
        (torch.zeros(2, requires_grad=True), TypeError),
        ([], ValueError),
        ([torch.zeros(2, requires_grad=True), [torch.zeros(2, requires_grad=True)]], TypeError),
    ],
    ids=["single-tensor", "empty", "mixed"],
)
def test_bad_params_are_rejected(params, error):
    with pytest.raises(error, match="param"):
        AccelOptimizer(params, [sgd_step], lr=0.1)


def test_defaults_merge_callbacks_then_keywords():
    (p,) = _params((2,))
    opt = AccelOptimizer([p], [weight_decay, partial(average_grad, dampening=True)], wd=0.1)
    # weight_decay brings wd=0, average_grad (seen through the partial) mom=0.9; wd=0.1 wins.
    assert opt.hypers == [{"wd": 0.1, "mom": 0.9}]
    assert opt.defaults["momentum"] == 0.9  # torch's name, for schedulers and monitors


def test_a_partial_of_accel_optimizer_is_an_opt_func():
    opt_func = partial(AccelOptimizer, cbs=SGD_MOM, mom=0.9)
    init = torch.randn(4, 3)
    ours, theirs = init.clone().requires_grad_(), init.clone().requires_grad_()
    opt, ref = opt_func([ours], lr=0.1), torch.optim.SGD([theirs], lr=0.1, momentum=0.9)
    for i in range(5):
        ours.grad = torch.full((4, 3), float(i))
        theirs.grad = torch.full((4, 3), float(i))
        opt.step()
        ref.step()
    assert torch.equal(ours, theirs)


# -- hyper-parameters ---------------------------------------------------------------------


def test_hypers_hold_hyper_parameters_only():
    (p,) = _params((2,))
    (h,) = Adam([p], lr=1e-3).hypers
    assert set(h) == {"lr", "mom", "sqr_mom", "eps", "wd"}


def test_torch_names_follow_mom_and_sqr_mom_in_both_directions():
    (p,) = _params((2,))
    opt = Adam([p], lr=1e-3)
    group = opt.param_groups[0]
    opt.set_hyper("mom", 0.8)
    assert group["momentum"] == 0.8 and group["betas"] == (0.8, 0.99)
    opt.set_hyper("sqr_mom", 0.9)
    assert group["betas"] == (0.8, 0.9)
    group["betas"] = (0.7, 0.95)  # what OneCycleLR does
    assert (group["mom"], group["sqr_mom"], group["momentum"]) == (0.7, 0.95, 0.7)
    group["momentum"] = 0.6  # what CyclicLR does
    assert (group["mom"], group["betas"]) == (0.6, (0.6, 0.95))


def test_mirroring_survives_load_state_dict():
    (p,) = _params((2,))
    opt = Adam([p], lr=1e-3)
    opt.load_state_dict(Adam([p], lr=1e-3, mom=0.5).state_dict())
    assert opt.hypers[0]["mom"] == 0.5
    opt.param_groups[0]["betas"] = (0.85, 0.99)
    assert opt.hypers[0]["mom"] == 0.85


def _three_groups():
    return AccelOptimizer([_params((2,)), _params((2,)), _params((2,))], SGD_MOM, lr=0.1)


def test_set_hyper_with_a_scalar_a_list_and_slices():
    opt = _three_groups()
    opt.set_hyper("lr", 0.3)
    assert [h["lr"] for h in opt.hypers] == [0.3, 0.3, 0.3]
    opt.set_hyper("mom", [0.1, 0.2, 0.3])
    assert [h["mom"] for h in opt.hypers] == [0.1, 0.2, 0.3]
    opt.set_hyper("lr", slice(1e-5, 1e-3))
    assert [h["lr"] for h in opt.hypers] == pytest.approx([1e-5, 1e-4, 1e-3], rel=1e-12)
    opt.set_hyper("lr", slice(1e-2))
    assert [h["lr"] for h in opt.hypers] == pytest.approx([1e-3, 1e-3, 1e-2], rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 6),
    lo=st.floats(1e-7, 1e-3),
    ratio=st.floats(1.0, 1e4),
)
def test_slice_spreads_geometrically(n, lo, ratio):
    opt = AccelOptimizer([_params((1,)) for _ in range(n)], [sgd_step], lr=0.1)
    hi = lo * ratio
    opt.set_hyper("lr", slice(lo, hi))
    lrs = [h["lr"] for h in opt.hypers]
    assert lrs[-1] == pytest.approx(hi, rel=1e-9)
    if n > 1:
        assert lrs[0] == pytest.approx(lo, rel=1e-9)
        steps = [b / a for a, b in zip(lrs, lrs[1:])]
        assert steps == pytest.approx([ratio ** (1 / (n - 1))] * (n - 1), rel=1e-9)


def test_set_hypers_sets_several():
    opt = _three_groups()
    opt.set_hypers(lr=0.01, mom=[0.5, 0.6, 0.7])
    assert [(h["lr"], h["mom"]) for h in opt.hypers] == [(0.01, 0.5), (0.01, 0.6), (0.01, 0.7)]


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("lrr", 0.1, "unknown hyper-parameter 'lrr'"),
        ("lr", [0.1, 0.2], "got 2 values but the optimizer has 3 parameter groups"),
        ("lr", -0.1, "lr must be a finite number >= 0, got -0.1"),
        ("lr", [0.1, 0.1, -1.0], r"lr \(parameter group 2\) must be a finite number >= 0"),
        ("wd", -1e-4, "wd must be a finite number >= 0"),
        ("mom", 1.0, r"mom must be a finite number in \[0, 1\)"),
        ("mom", -0.1, r"mom must be a finite number in \[0, 1\)"),
        ("momentum", 0.9, "'mom'"),
    ],
)
def test_set_hyper_rejects_bad_input_and_changes_nothing(name, value, match):
    opt = _three_groups()
    before = copy.deepcopy(opt.hypers)
    with pytest.raises(ValueError, match=match):
        opt.set_hyper(name, value)
    assert opt.hypers == before


def test_set_hypers_checks_everything_before_applying_anything():
    opt = _three_groups()
    with pytest.raises(ValueError, match="mom must be a finite number in"):
        opt.set_hypers(lr=0.5, mom=2.0)
    assert [h["lr"] for h in opt.hypers] == [0.1, 0.1, 0.1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=-1.0), "lr must be a finite number >= 0"),
        (dict(lr=0.1, eps=-1e-8), "eps must be a finite number >= 0"),
        (dict(lr=0.1, wd=-0.1), "wd must be a finite number >= 0"),
        (dict(lr=0.1, mom=1.5), r"mom must be a finite number in \[0, 1\)"),
        (dict(lr=0.1, sqr_mom=1.0), r"sqr_mom must be a finite number in \[0, 1\)"),
        (dict(lr=0.1, betas=(0.9, 1.2)), r"sqr_mom must be a finite number in \[0, 1\)"),
    ],
)
def test_construction_rejects_out_of_range_hyper_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AccelOptimizer(_params((2,)), SGD_MOM, **kwargs)


def test_a_group_dict_is_validated_too():
    with pytest.raises(ValueError, match=r"lr \(parameter group 0\) must be a finite number >= 0"):
        AccelOptimizer([{"params": _params((2,)), "lr": -1}], [sgd_step], lr=0.1)


def test_unknown_impl_is_rejected():
    with pytest.raises(ValueError, match="impl must be one of"):
        AccelOptimizer(_params((2,)), [sgd_step], impl="fastest", lr=0.1)


# -- a callback that needs a name nobody defines --------------------------------------------


def needs_gamma(p, lr, gamma, **kwargs):
    p.data.add_(p.grad, alpha=-lr * gamma)


def test_missing_hyper_parameter_fails_at_the_first_step_naming_callback_and_name():
    params = _params((3,), (2,))
    opt = AccelOptimizer(params, [weight_decay, needs_gamma], lr=0.1, wd=0.5)
    _give_grads(params)
    before = [p.detach().clone() for p in params]
    with pytest.raises(ValueError, match="'needs_gamma' needs 'gamma'"):
        opt.step()
    # Nothing moved, not even by weight_decay, which runs before the failing callback.
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert all(not opt.state[p] for p in params)


def test_missing_state_from_an_absent_stat_callback_is_named_too():
    params = _params((3,))
    opt = AccelOptimizer(params, [momentum_step], lr=0.1)
    _give_grads(params)
    with pytest.raises(ValueError, match="'momentum_step' needs 'grad_avg'"):
        opt.step()


def test_state_returned_without_being_declared_is_not_mistaken_for_missing():
    def remember(p, **kwargs):  # stores `seen` without taking it as an argument
        return {"seen": p.grad.clone()}

    def use(p, lr, seen, **kwargs):
        p.data.add_(seen, alpha=-lr)

    (p,) = params = _params((3,))
    opt = AccelOptimizer(params, [remember, use], lr=0.5)
    p.grad = torch.ones(3)
    before = p.detach().clone()
    opt.step()
    assert torch.equal(p.detach(), before - 0.5)


def test_sparse_gradients_are_rejected_clearly():
    emb = nn.Embedding(10, 3, sparse=True)
    opt = AccelOptimizer(emb.parameters(), [sgd_step], lr=0.1)
    emb(torch.tensor([1, 2])).sum().backward()
    before = emb.weight.detach().clone()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()
    assert torch.equal(emb.weight, before)


# -- stepping, skipping, closures -----------------------------------------------------------


def test_step_runs_the_closure_with_grad_enabled_and_returns_its_loss():
    model = nn.Linear(3, 1)
    opt = AccelOptimizer(model.parameters(), [sgd_step], lr=0.1)
    x = torch.randn(4, 3)

    def closure():
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    w0 = model.weight.detach().clone()
    with torch.no_grad():
        loss = opt.step(closure)
    assert loss.item() > 0
    assert not torch.equal(model.weight, w0)


def test_params_without_gradients_are_left_alone():
    a, b = _params((2,), (2,))
    opt = AccelOptimizer([a, b], SGD_MOM, lr=0.1)
    a.grad = torch.ones(2)
    b0 = b.detach().clone()
    opt.step()
    assert torch.equal(b, b0) and b not in opt.state


@pytest.mark.parametrize("wrap", [False, True], ids=["accel", "lookahead"])
def test_skip_next_step_runs_the_closure_but_changes_nothing(wrap):
    model = nn.Linear(3, 1)
    opt = Adam(model.parameters(), lr=0.1)
    if wrap:
        opt = Lookahead(opt, k=1)
    x = torch.randn(4, 3)

    def closure():
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    weights = copy.deepcopy(model.state_dict())
    state = copy.deepcopy(opt.state_dict())
    opt.skip_next_step()
    assert opt.step(closure).item() > 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    after = opt.state_dict()
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(after["state"][pid][key]))
    opt.step(closure)  # only one step is skipped
    assert not torch.equal(weights["weight"], model.weight)


def test_zero_grad_sets_to_none_by_default():
    (p,) = params = _params((2,))
    opt = AccelOptimizer(params, [sgd_step], lr=0.1)
    p.grad = torch.ones(2)
    opt.zero_grad()
    assert p.grad is None
    p.grad = torch.ones(2)
    opt.zero_grad(set_to_none=False)
    assert torch.equal(p.grad, torch.zeros(2))


# -- freezing and state -----------------------------------------------------------------


def test_freeze_trains_only_the_last_group_and_force_train_params():
    body, bn, head = _params((3, 3)), _params((3,)), _params((2, 3))
    opt = AccelOptimizer([body, bn, head], [sgd_step], lr=0.1)
    opt.state[bn[0]]["force_train"] = True
    opt.freeze()
    assert [p.requires_grad for p in body + bn + head] == [False, True, True]
    opt.freeze_to(1)
    assert [p.requires_grad for p in body + bn + head] == [False, True, True]
    opt.freeze_to(2)
    assert [p.requires_grad for p in body + bn + head] == [False, True, True]
    opt.state[bn[0]]["force_train"] = False
    opt.freeze_to(-2)
    assert [p.requires_grad for p in body + bn + head] == [False, True, True]
    opt.unfreeze()
    assert all(p.requires_grad for p in body + bn + head)


def test_frozen_parameters_are_not_updated_by_a_training_step():
    body, head = nn.Linear(3, 3), nn.Linear(3, 1)
    opt = AccelOptimizer([list(body.parameters()), list(head.parameters())], [sgd_step], lr=0.1)
    opt.freeze()
    w_body, w_head = body.weight.detach().clone(), head.weight.detach().clone()
    head(body(torch.randn(4, 3))).sum().backward()
    opt.step()
    assert torch.equal(body.weight, w_body) and not torch.equal(head.weight, w_head)


def test_freeze_needs_two_groups_and_freezing_everything_warns():
    opt = AccelOptimizer(_params((2,)), [sgd_step], lr=0.1)
    with pytest.raises(ValueError, match="at least two parameter groups"):
        opt.freeze()
    with pytest.warns(UserWarning, match="freezes all 1 parameter groups"):
        opt.freeze_to(1)


def test_clear_state_keeps_the_flags_and_forgets_statistics():
    a, b = params = _params((2,), (2,))
    opt = AccelOptimizer(params, SGD_MOM, lr=0.1)
    opt.state[a]["do_wd"] = False
    opt.state[b]["force_train"] = True
    _give_grads(params)
    opt.step()
    assert "grad_avg" in opt.state[a]
    opt.clear_state()
    assert opt.state[a] == {"do_wd": False} and opt.state[b] == {"force_train": True}


def test_copies_and_pickles_step_like_the_original():
    params = _params((3,))
    opt = Adam(params, lr=0.1)
    _give_grads(params)
    opt.step()
    twin = copy.deepcopy((params, opt))
    pickled = pickle.loads(pickle.dumps((params, opt)))
    for ps, o in [(params, opt), twin, pickled]:
        _give_grads(ps, seed=1)
        o.step()
    assert torch.equal(params[0], twin[0][0]) and torch.equal(params[0], pickled[0][0])
    twin[1].set_hyper("mom", 0.5)
    assert twin[1].param_groups[0]["betas"][0] == 0.5


def test_set_hyper_does_not_accept_state_names():
    opt = _three_groups()
    with pytest.raises(ValueError, match="unknown hyper-parameter 'grad_avg'"):
        opt.set_hyper("grad_avg", 0.1)


def test_set_hyper_accepts_a_name_a_callback_requires_before_any_group_has_it():
    params = _params((3,))
    opt = AccelOptimizer(params, [needs_gamma], lr=0.1)
    opt.set_hyper("gamma", 2.0)
    params[0].grad = torch.ones(3)
    before = params[0].detach().clone()
    opt.step()
    assert torch.allclose(params[0].detach(), before - 0.2)


def test_a_hyper_parameter_no_callback_names_gets_a_warning():
    with pytest.warns(UserWarning, match=r"\['mon'\] are not arguments of any callback"):
        AccelOptimizer(_params((2,)), SGD_MOM, lr=0.1, mon=0.9)
    with pytest.warns(UserWarning, match=r"\['weight_decay'\]"):
        AccelOptimizer([{"params": _params((2,)), "weight_decay": 0.1}], [sgd_step], lr=0.1)


def test_add_param_group_later_gets_defaults_mirroring_and_checks():
    a, b = _params((2,), (3,))
    opt = Adam([a], lr=0.1)
    opt.add_param_group({"params": [b], "betas": (0.8, 0.9)})
    assert opt.hypers[1] == {**opt.hypers[0], "mom": 0.8, "sqr_mom": 0.9}
    opt.param_groups[1]["momentum"] = 0.7
    assert opt.param_groups[1]["betas"] == (0.7, 0.9)
    with pytest.raises(ValueError, match=r"eps \(parameter group 2\) must be a finite number >= 0"):
        opt.add_param_group({"params": _params((1,)), "eps": -1.0})
    assert len(opt.param_groups) == 2
    _give_grads([a, b])
    opt.step()
    assert opt.state[b]["step"] == 1


def test_a_failing_group_leaves_the_groups_before_it_untouched():
    a, b = _params((3,), (3,))
    groups = [{"params": [a], "gamma": 1.0}, {"params": [b]}]  # only the first defines gamma
    opt = AccelOptimizer(groups, [weight_decay, needs_gamma], lr=0.1, wd=0.1)
    _give_grads([a, b])
    before = [a.detach().clone(), b.detach().clone()]
    with pytest.raises(ValueError, match="'needs_gamma' needs 'gamma'"):
        opt.step()
    assert torch.equal(a, before[0]) and torch.equal(b, before[1])


_WRITES = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["mom", "sqr_mom", "momentum"]), st.floats(0, 0.999)),
        st.tuples(st.just("betas"), st.tuples(st.floats(0, 0.999), st.floats(0, 0.999))),
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(writes=_WRITES)
def test_any_sequence_of_writes_keeps_both_vocabularies_in_step(writes):
    group = Adam(_params((1,)), lr=0.1).param_groups[0]
    for key, value in writes:
        group[key] = value
    assert group["mom"] == group["momentum"] == group["betas"][0]
    assert group["sqr_mom"] == group["betas"][1]
    if writes:  # the last write wins
        key, value = writes[-1]
        assert group[key] == value
