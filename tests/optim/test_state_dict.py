"""state_dict in torch's format: a saved and reloaded optimizer continues bit-exactly."""

import copy

import pytest
import torch

from lightning_accel.optim import SGD, Adam, Lamb, Larc, Lookahead, RAdam, ranger

from .helpers import gradient_sequence, initial_params

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
