"""torch.optim state dicts load into the recipe that computes the same numbers, with torch's own
optimizers on both sides: torch trains 5 steps, the recipe continues 5 from torch's state, and
the weights equal torch training 10. What cannot be carried over is refused, changing nothing."""

from __future__ import annotations

import copy

import pytest
import torch

from lightning_accel.optim import SGD, Adam, Lamb, RMSProp

from .helpers import assert_unchanged, gradient_sequence, initial_params, max_rel_diff, snapshot

SHAPES = [(4, 3), (3,), (2, 2, 2)]
TOL = 1e-6


def _train(params, opt, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()


def _fresh(weights):
    return [w.detach().clone().requires_grad_() for w in weights]


def _groups(params, split):
    """One group, or two (the first two parameters, then the rest) with their own settings."""
    if split is None:
        return params
    return [{"params": params[:2], **split[0]}, {"params": params[2:], **split[1]}]


def switch_midway(make_torch, make_ours, split=None, seed=0):
    """Weights after torch trains 10 steps, and after torch 5 then ours 5 from torch's state."""
    init, grads = initial_params(SHAPES, seed), gradient_sequence(SHAPES, 10, seed)
    straight = _fresh(init)
    _train(straight, make_torch(_groups(straight, split)), grads)

    switched = _fresh(init)
    before = make_torch(_groups(switched, split))
    _train(switched, before, grads[:5])
    after = make_ours(_groups(switched, split))
    after.load_state_dict(before.state_dict())
    _train(switched, after, grads[5:])
    return switched, straight, after


@pytest.mark.parametrize("seed", [0, 1])
def test_adamw_state_continues_in_adam_as_adamw_would(seed):
    ours, theirs, opt = switch_midway(
        lambda ps: torch.optim.AdamW(ps, lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
        lambda ps: Adam(ps, lr=0.5),  # every hyper-parameter comes from the state dict
        seed=seed,
    )
    assert max_rel_diff(ours, theirs) <= TOL
    assert opt.hypers[0] == dict(lr=1e-2, mom=0.8, sqr_mom=0.95, eps=1e-6, wd=0.1)
    assert all(isinstance(s["step"], int) and s["step"] == 10 for s in opt.state.values())


def test_adam_with_l2_state_continues_in_adam_with_l2():
    ours, theirs, _ = switch_midway(
        lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.05),
        lambda ps: Adam(ps, lr=1e-3, decouple_wd=False),
    )
    assert max_rel_diff(ours, theirs) <= TOL


def test_adamw_groups_with_their_own_settings_keep_them():
    split = ({"lr": 1e-2, "weight_decay": 0.1}, {"lr": 3e-3, "weight_decay": 0.0})
    ours, theirs, opt = switch_midway(
        lambda groups: torch.optim.AdamW(groups),
        lambda groups: Adam([g["params"] for g in groups], lr=1e-3),
        split=split,
    )
    assert max_rel_diff(ours, theirs) <= TOL
    assert [(h["lr"], h["wd"]) for h in opt.hypers] == [(1e-2, 0.1), (3e-3, 0.0)]


@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_sgd_momentum_state_continues_in_sgd(wd):
    ours, theirs, opt = switch_midway(
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=wd),
        lambda ps: SGD(ps, lr=0.1, mom=0.5, decouple_wd=False),
    )
    assert max_rel_diff(ours, theirs) <= TOL
    assert opt.hypers[0] == dict(lr=0.05, mom=0.9, wd=wd)


def test_plain_sgd_state_continues_in_plain_sgd():
    ours, theirs, _ = switch_midway(
        lambda ps: torch.optim.SGD(ps, lr=0.05, weight_decay=1e-2),
        lambda ps: SGD(ps, lr=0.1, decouple_wd=False),
    )
    assert max_rel_diff(ours, theirs) <= TOL


@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_rmsprop_state_continues_in_rmsprop(wd):
    ours, theirs, opt = switch_midway(
        lambda ps: torch.optim.RMSprop(ps, lr=1e-2, alpha=0.9, eps=1e-6, weight_decay=wd),
        lambda ps: RMSProp(ps, lr=1e-3, decouple_wd=False),
    )
    assert max_rel_diff(ours, theirs) <= TOL
    assert opt.hypers[0] == dict(lr=1e-2, mom=0, sqr_mom=0.9, eps=1e-6, wd=wd)


# -- refusals --------------------------------------------------------------------------------


def _torch_state(make_torch, shapes=SHAPES, steps=3):
    params = _fresh(initial_params(shapes, 3))
    opt = make_torch(params)
    _train(params, opt, gradient_sequence(shapes, steps, 3))
    return opt.state_dict()


def _trained(make_ours):
    params = _fresh(initial_params(SHAPES, 5))
    opt = make_ours(params)
    _train(params, opt, gradient_sequence(SHAPES, 2, 5))
    return opt


REFUSALS = [
    (
        lambda ps: torch.optim.AdamW(ps, amsgrad=True),
        lambda ps: Adam(ps, lr=1e-3),
        "amsgrad=True",
    ),
    (
        lambda ps: torch.optim.AdamW(ps, maximize=True),
        lambda ps: Adam(ps, lr=1e-3),
        "maximize=True",
    ),
    (
        lambda ps: torch.optim.AdamW(ps, weight_decay=0.1),
        lambda ps: Adam(ps, lr=1e-3, decouple_wd=False),
        r"weight decay is decoupled and this pipeline's is L2.*decouple_wd=True",
    ),
    (
        lambda ps: torch.optim.Adam(ps, weight_decay=0.1),
        lambda ps: Adam(ps, lr=1e-3),
        r"weight decay is L2 and this pipeline's is decoupled.*decouple_wd=False",
    ),
    (
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
        lambda ps: SGD(ps, lr=0.1, mom=0.9),
        "nesterov=True",
    ),
    (
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1),
        lambda ps: SGD(ps, lr=0.1, mom=0.9),
        "dampening=0.1",
    ),
    (
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda ps: SGD(ps, lr=0.1),
        r"SGD with momentum .* this optimizer's pipeline differs",
    ),
    (
        lambda ps: torch.optim.SGD(ps, lr=0.1),
        lambda ps: SGD(ps, lr=0.1, mom=0.9),
        r"SGD without momentum .* this optimizer's pipeline differs",
    ),
    (
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
        lambda ps: SGD(ps, lr=0.1, mom=0.9),
        "weight decay is L2",
    ),
    (
        lambda ps: torch.optim.RMSprop(ps, centered=True),
        lambda ps: RMSProp(ps, lr=0.01, decouple_wd=False),
        "centered=True",
    ),
    (
        lambda ps: torch.optim.RMSprop(ps, momentum=0.9),
        lambda ps: RMSProp(ps, lr=0.01, mom=0.9, decouple_wd=False),
        "momentum=0.9: torch averages the normalised steps",
    ),
    (
        lambda ps: torch.optim.AdamW(ps),
        lambda ps: SGD(ps, lr=0.1, mom=0.9),
        r"torch.optim.Adam's state .* its math is Adam",
    ),
    (
        lambda ps: torch.optim.AdamW(ps),
        lambda ps: Lamb(ps, lr=0.1),
        "this optimizer's pipeline differs",
    ),
    (
        lambda ps: torch.optim.Adagrad(ps),
        lambda ps: Adam(ps, lr=1e-3),
        "only the states of torch.optim.Adam, AdamW, SGD and RMSprop have a translation",
    ),
]


@pytest.mark.parametrize("make_torch, make_ours, match", REFUSALS)
def test_untranslatable_torch_states_are_refused_and_change_nothing(make_torch, make_ours, match):
    opt = _trained(make_ours)
    before = snapshot(opt)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(_torch_state(make_torch))
    assert_unchanged(before, opt)


def test_a_torch_state_of_another_model_is_refused_and_changes_nothing():
    opt = _trained(lambda ps: Adam(ps, lr=1e-3))
    before = snapshot(opt)
    other = _torch_state(lambda ps: torch.optim.AdamW(ps), shapes=[(3, 4), (3,), (2, 2, 2)])
    with pytest.raises(ValueError, match=r"'grad_avg' of parameter 0 .* has shape \(3, 4\)"):
        opt.load_state_dict(other)
    assert_unchanged(before, opt)


def test_a_torch_state_saved_without_saying_how_it_decays_is_refused():
    # torch < 2.6 saved Adam and AdamW alike: with weight decay, which one it was is unknown.
    sd = _torch_state(lambda ps: torch.optim.AdamW(ps, weight_decay=0.1))
    for group in sd["param_groups"]:
        del group["decoupled_weight_decay"]
    opt = _trained(lambda ps: Adam(ps, lr=1e-3))
    before = snapshot(opt)
    with pytest.raises(ValueError, match="does not say whether its weight decay is decoupled"):
        opt.load_state_dict(sd)
    assert_unchanged(before, opt)
    for group in sd["param_groups"]:  # without weight decay both are the same
        group["weight_decay"] = 0.0
    opt.load_state_dict(sd)


def test_an_unknown_key_in_a_torch_group_is_refused():
    sd = _torch_state(lambda ps: torch.optim.AdamW(ps))
    sd["param_groups"][0]["new_torch_option"] = True
    opt = _trained(lambda ps: Adam(ps, lr=1e-3))
    with pytest.raises(ValueError, match=r"keys \['new_torch_option'\] have no known meaning"):
        opt.load_state_dict(sd)


def test_a_translated_state_with_bad_hyper_parameters_is_refused():
    sd = _torch_state(lambda ps: torch.optim.AdamW(ps))
    sd["param_groups"][0]["lr"] = float("nan")
    opt = _trained(lambda ps: Adam(ps, lr=1e-3))
    before = snapshot(opt)
    with pytest.raises(ValueError, match=r"lr \(parameter group 0 of the state_dict\) must be"):
        opt.load_state_dict(sd)
    assert_unchanged(before, opt)


def test_translation_leaves_the_torch_state_dict_as_it_was():
    sd = _torch_state(lambda ps: torch.optim.AdamW(ps))
    keep = copy.deepcopy(sd)
    _trained(lambda ps: Adam(ps, lr=1e-3)).load_state_dict(sd)
    assert sd["param_groups"] == keep["param_groups"]
    for pid, state in keep["state"].items():
        assert state.keys() == sd["state"][pid].keys()
        assert all(torch.equal(v, sd["state"][pid][k]) for k, v in state.items())
