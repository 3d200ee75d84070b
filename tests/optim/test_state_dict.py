"""state_dict in torch's format: a saved and reloaded optimizer continues bit-exactly."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_accel.optim import SGD, Adam, Lamb, Larc, Lookahead, RAdam, ranger

from .helpers import assert_unchanged, gradient_sequence, initial_params, snapshot

SHAPES = [(4, 3), (3,)]
RECIPES = {
    "adam": lambda ps: Adam(ps, lr=0.01),
    "sgd": lambda ps: SGD(ps, lr=0.01, mom=0.9),
    "lamb": lambda ps: Lamb(ps, lr=0.01),
    "larc": lambda ps: Larc(ps, lr=0.01),
    "ranger": lambda ps: ranger(ps, lr=0.01),
    "lookahead-k3": lambda ps: Lookahead(RAdam(ps, lr=0.01), k=3),
}


def _steps(params, opt, grads):
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()


def _fresh(make, weights):
    params = [w.detach().clone().requires_grad_() for w in weights]
    opt = make(params)
    opt.state[params[1]]["do_wd"] = False  # flags travel through the state_dict too
    return params, opt


@pytest.mark.parametrize("name", RECIPES)
def test_save_load_and_continue_is_bit_exact(name, tmp_path):
    make = RECIPES[name]
    init, grads = initial_params(SHAPES, 0), gradient_sequence(SHAPES, 10, 0)
    straight, opt = _fresh(make, init)
    _steps(straight, opt, grads)

    first, opt = _fresh(make, init)
    _steps(first, opt, grads[:5])
    torch.save(opt.state_dict(), tmp_path / "opt.pt")

    resumed = [p.detach().clone().requires_grad_() for p in first]
    opt = make(resumed)  # no flag set: it must come from the file
    opt.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    assert opt.state[resumed[1]]["do_wd"] is False
    _steps(resumed, opt, grads[5:])
    assert all(torch.equal(a, b) for a, b in zip(resumed, straight))


def _trained_adam():
    params = [torch.randn(s, requires_grad=True) for s in SHAPES]
    opt = Adam(params, lr=0.01)
    _steps(params, opt, gradient_sequence(SHAPES, 2, 0))
    return params, opt


def _assert_same_state(before, opt):
    after = opt.state_dict()
    assert before["param_groups"] == after["param_groups"]
    assert before["state"].keys() == after["state"].keys()
    for pid, pstate in before["state"].items():
        for key, value in pstate.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(after["state"][pid][key]))


@pytest.mark.parametrize(
    "other_shapes, match",
    [
        ([(4, 3)], "has 1 parameters in state_dict but 2"),
        ([(4, 3), (3,), (2,)], "has 3 parameters in state_dict but 2"),
        ([(3, 4), (3,)], r"has shape \(3, 4\), but this pipeline keeps it shaped \(4, 3\)"),
    ],
    ids=["fewer", "more", "shape"],
)
def test_load_state_dict_from_another_model_fails_and_changes_nothing(other_shapes, match):
    _, opt = _trained_adam()
    other = [torch.randn(s, requires_grad=True) for s in other_shapes]
    other_opt = Adam(other, lr=0.5)
    _steps(other, other_opt, gradient_sequence(other_shapes, 1, 1))
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(other_opt.state_dict())
    _assert_same_state(before, opt)


def test_load_state_dict_with_another_number_of_groups_fails_and_changes_nothing():
    _, opt = _trained_adam()
    a, b = (torch.randn(s, requires_grad=True) for s in SHAPES)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match="2 parameter groups, this optimizer has 1"):
        opt.load_state_dict(Adam([[a], [b]], lr=0.01).state_dict())
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        opt.load_state_dict({"state": {}})
    _assert_same_state(before, opt)


def test_lookahead_rejects_foreign_slow_weights_and_changes_nothing():
    params = [torch.randn(s, requires_grad=True) for s in SHAPES]
    opt = ranger(params, lr=0.01)
    _steps(params, opt, gradient_sequence(SHAPES, 7, 0))
    sd = opt.state_dict()
    sd["lookahead"]["slow_weights"] = [[torch.zeros(2, 2), torch.zeros(3)]]
    count, slow = opt.count, [s.clone() for s in opt.slow_weights[0]]
    with pytest.raises(ValueError, match="slow weights"):
        opt.load_state_dict(sd)
    with pytest.raises(ValueError, match="'lookahead'"):
        opt.load_state_dict(opt.opt.state_dict())
    assert opt.count == count and all(torch.equal(a, b) for a, b in zip(slow, opt.slow_weights[0]))


# -- a state_dict must belong to this pipeline -------------------------------------------------

ANOTHER_RECIPE = [
    # (saved by, loaded into, what the error names)
    (lambda ps: SGD(ps, lr=0.1, mom=0.9), lambda ps: Adam(ps, lr=0.01), "saved by an optimizer"),
    (lambda ps: Adam(ps, lr=0.01), lambda ps: SGD(ps, lr=0.1, mom=0.9), "saved by an optimizer"),
    (lambda ps: Lamb(ps, lr=0.01), lambda ps: Adam(ps, lr=0.01), "lamb_step"),
    (lambda ps: Adam(ps, lr=0.01), lambda ps: Adam(ps, lr=0.01, decouple_wd=False), "l2_reg"),
    (lambda ps: RAdam(ps, lr=0.01), lambda ps: Adam(ps, lr=0.01), "radam_step"),
]


@pytest.mark.parametrize("saved_by, loaded_into, match", ANOTHER_RECIPE)
def test_another_recipes_state_is_refused_and_changes_nothing(saved_by, loaded_into, match):
    init, grads = initial_params(SHAPES, 0), gradient_sequence(SHAPES, 3, 0)
    other_params, other = _fresh(saved_by, init)
    _steps(other_params, other, grads)
    params, opt = _fresh(loaded_into, init)
    _steps(params, opt, grads[:2])
    before = snapshot(opt)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(other.state_dict())
    assert_unchanged(before, opt)


@pytest.mark.parametrize(
    "saved_by, loaded_into, match",
    [
        (
            lambda ps: SGD(ps, lr=0.1, mom=0.9),
            lambda ps: Adam(ps, lr=0.01),
            r"lacks \['betas', 'eps', 'sqr_mom'\]",
        ),
        (
            lambda ps: Adam(ps, lr=0.01),
            lambda ps: SGD(ps, lr=0.1, mom=0.9),
            r"has hyper-parameters \['betas', 'eps', 'sqr_mom'\] that this optimizer does not",
        ),
        (
            lambda ps: Lamb(ps, lr=0.01),
            lambda ps: Adam(ps, lr=0.01),
            r"has state \['trust_ratio'\] that this optimizer's pipeline does not keep",
        ),
    ],
)
def test_without_the_pipeline_entry_the_groups_and_state_still_tell(saved_by, loaded_into, match):
    """State dicts written before `pipeline` was saved are still checked key by key."""
    init, grads = initial_params(SHAPES, 0), gradient_sequence(SHAPES, 3, 0)
    other_params, other = _fresh(saved_by, init)
    _steps(other_params, other, grads)
    sd = other.state_dict()
    del sd["pipeline"]
    params, opt = _fresh(loaded_into, init)
    _steps(params, opt, grads[:2])
    before = snapshot(opt)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(sd)
    assert_unchanged(before, opt)


def test_a_state_dict_without_the_pipeline_entry_of_the_same_pipeline_loads():
    init, grads = initial_params(SHAPES, 0), gradient_sequence(SHAPES, 6, 0)
    straight, opt = _fresh(RECIPES["adam"], init)
    _steps(straight, opt, grads)
    first, opt = _fresh(RECIPES["adam"], init)
    _steps(first, opt, grads[:3])
    sd = opt.state_dict()
    del sd["pipeline"]  # as saved before the entry existed
    resumed = [p.detach().clone().requires_grad_() for p in first]
    opt = RECIPES["adam"](resumed)
    opt.load_state_dict(sd)
    _steps(resumed, opt, grads[3:])
    assert all(torch.equal(a, b) for a, b in zip(resumed, straight))


def _set(path):
    """A mutation setting sd[...path...] to a value."""

    def mutate(sd, value):
        target = sd
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _drop(path):
    def mutate(sd, _):
        target = sd
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


# Each entry: (what is wrong, how to make it wrong, values to use, what the error names).
CORRUPTIONS = [
    ("drop a statistic", _drop(["state", 0, "sqr_avg"]), [None], r"lacks \['sqr_avg'\]"),
    ("a foreign statistic", _set(["state", 1, "exp_avg"]), [torch.zeros(3)], "'exp_avg'"),
    (
        "a statistic of another shape",
        _set(["state", 0, "grad_avg"]),
        [torch.zeros(12), torch.zeros(3, 4), torch.zeros(())],
        "'grad_avg' of parameter 0",
    ),
    (
        "a statistic of another kind",
        _set(["state", 1, "grad_avg"]),
        [0.5, [0.0, 0.0, 0.0], torch.zeros(3, dtype=torch.long)],
        "'grad_avg' of parameter 1",
    ),
    ("a bad step", _set(["state", 0, "step"]), [-1, 2.5, "3", None], "'step' of parameter 0"),
    ("a bad flag", _set(["state", 1, "do_wd"]), ["no", 0, None], "'do_wd' of parameter 1"),
    (
        "a bad hyper-parameter",
        _set(["param_groups", 0, "lr"]),
        [float("nan"), -1.0, "0.1", True],
        r"lr \(parameter group 0 of the state_dict\)",
    ),
    (
        "momentum out of range",
        _set(["param_groups", 0, "mom"]),
        [1.0, float("inf")],
        r"mom \(parameter group 0 of the state_dict\)",
    ),
    (
        "aliases that disagree",
        _set(["param_groups", 0, "betas"]),
        [(0.5, 0.99), (0.9, 0.5)],
        r"betas=.* but \(mom, sqr_mom\)",
    ),
    ("a missing hyper-parameter", _drop(["param_groups", 0, "eps"]), [None], r"lacks \['eps'\]"),
    (
        "an unknown hyper-parameter",
        _set(["param_groups", 0, "amsgrad"]),
        [False],
        r"\['amsgrad'\] that this optimizer does not know",
    ),
    ("a stray parameter id", _set(["state", 7]), [{"step": 1}], r"ids \[7\] that no parameter"),
    (
        "a state that is not a dict",
        _set(["state", 0]),
        [[1, 2], torch.zeros(4, 3)],
        "the state of parameter 0 .* must be a dict",
    ),
    ("no groups list", _set(["param_groups"]), [{"params": [0, 1]}], "'param_groups' must be"),
]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_corrupted_state_dict_is_refused_naming_it_and_changes_nothing(data):
    what, mutate, values, match = data.draw(st.sampled_from(CORRUPTIONS), label="corruption")
    value = data.draw(st.sampled_from(values), label=what)
    init, grads = initial_params(SHAPES, 0), gradient_sequence(SHAPES, 3, 0)
    params, source = _fresh(RECIPES["adam"], init)
    _steps(params, source, grads)
    sd = source.state_dict()
    mutate(sd, value)
    target_params, opt = _fresh(RECIPES["adam"], init)
    _steps(target_params, opt, grads[:1])
    before = snapshot(opt)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(sd)
    assert_unchanged(before, opt)


def test_lookahead_with_a_broken_entry_is_refused_before_its_inner_state_changes():
    params = [torch.randn(s, requires_grad=True) for s in SHAPES]
    opt = ranger(params, lr=0.01)
    _steps(params, opt, gradient_sequence(SHAPES, 7, 0))
    other = ranger([p.detach().clone().requires_grad_() for p in params], lr=0.5)
    _steps(list(other.param_groups[0]["params"]), other, gradient_sequence(SHAPES, 2, 1))
    before, count = snapshot(opt), opt.count
    for broken in ({"count": 1, "k": 6}, {"count": -1, "k": 6, "alpha": 0.5, "slow_weights": None}):
        sd = other.state_dict()
        sd["lookahead"] = broken
        with pytest.raises(ValueError, match="lookahead"):
            opt.load_state_dict(sd)
        assert_unchanged(before, opt)
        assert opt.count == count
