"""Training policies: 1cycle, flat-cos, SGDR and constant schedules, and their bad input."""

import pickle

import numpy as np
import pytest
import torch

from lightning_accel import AccelModule
from lightning_accel.schedule.policies import (
    ConstantPolicy,
    FlatCosPolicy,
    OneCyclePolicy,
    SGDRPolicy,
)

from ..tiny import cos, one_cycle


def one_cycle_lr(p, lr_max):
    return one_cycle(p, lr_max)[0]


HYPERS = [{"lr": 1e-3, "mom": 0.9, "wd": 0.0}]


def test_one_cycle_follows_the_published_curve():
    scheds = OneCyclePolicy(lr_max=0.01)(HYPERS)
    for p in np.linspace(0, 0.99, 23):
        assert scheds["lr"](p) == pytest.approx(one_cycle_lr(p, 0.01), rel=1e-12)
        expected_mom = cos(0.95, 0.85, p / 0.25) if p < 0.25 else cos(0.85, 0.95, (p - 0.25) / 0.75)
        assert scheds["mom"](p) == pytest.approx(expected_mom, rel=1e-12)
    assert scheds["lr"](0.0) == pytest.approx(0.01 / 25)
    assert scheds["lr"](0.25) == pytest.approx(0.01)
    assert scheds["lr"](1.0) == pytest.approx(0.01 / 1e5)


def test_one_cycle_defaults_to_the_optimizers_lrs_per_group():
    hypers = [{"lr": 1e-4, "mom": 0.9}, {"lr": 1e-3, "mom": 0.9}]
    scheds = OneCyclePolicy()(hypers)
    for p in (0.0, 0.1, 0.5, 0.9):
        np.testing.assert_allclose(
            scheds["lr"](p), [one_cycle_lr(p, 1e-4), one_cycle_lr(p, 1e-3)], rtol=1e-12
        )
    three = [*hypers, hypers[0]]
    sliced = OneCyclePolicy(lr_max=slice(1e-4, 1e-2))(three)  # geometric spread over 3 groups
    np.testing.assert_allclose(sliced["lr"](0.25), [1e-4, 1e-3, 1e-2])
    head = OneCyclePolicy(lr_max=slice(1e-2))(three)  # slice(stop): stop/10 for all but the last
    np.testing.assert_allclose(head["lr"](0.25), [1e-3, 1e-3, 1e-2])


def test_one_cycle_moms_come_from_the_module_then_the_default():
    module = AccelModule(torch.nn.Linear(2, 1), torch.nn.functional.mse_loss, moms=(0.9, 0.8, 0.7))
    assert OneCyclePolicy(lr_max=1.0)(HYPERS, module)["mom"](1.0) == pytest.approx(0.7)
    assert OneCyclePolicy(lr_max=1.0)(HYPERS)["mom"](1.0) == pytest.approx(0.95)
    assert OneCyclePolicy(lr_max=1.0, moms=(0, 0, 0))(HYPERS, module)["mom"](0.5) == 0
    # An optimizer without momentum (the chapter's plain sgd_cb) gets only lr scheduled.
    assert set(OneCyclePolicy(lr_max=1.0, moms=(0, 0, 0))([{"lr": 0.1}])) == {"lr"}


def test_flat_cos_sgdr_constant():
    flat = FlatCosPolicy(lr=0.1)(HYPERS)["lr"]
    assert flat(0.5) == pytest.approx(0.1)
    assert flat(0.75 + 0.125) == pytest.approx(cos(0.1, 0.1 / 1e5, 0.5))
    sgdr = SGDRPolicy(n_cycles=3, cycle_len=1, lr_max=0.1)
    assert sgdr.n_epoch == 7 and sgdr.cycle_epochs == [1, 2, 4]
    lr = sgdr(HYPERS)["lr"]
    assert lr(0.0) == pytest.approx(0.1)
    assert lr(1 / 7 - 1e-9) == pytest.approx(0.0, abs=1e-8)
    assert lr(1 / 7) == pytest.approx(0.1)  # warm restart
    assert lr(1 / 7 + 1 / 7) == pytest.approx(0.05)  # half-way through the 2-epoch cycle
    assert SGDRPolicy(n_cycles=2, cycle_len=3, cycle_mult=1).n_epoch == 6
    const = ConstantPolicy(lr=0.03, wd=0.1)(HYPERS)
    assert const["lr"](0.7) == 0.03 and const["wd"](0.2) == 0.1
    assert ConstantPolicy()(HYPERS) == {}


def test_policies_pickle():
    policy = pickle.loads(pickle.dumps(OneCyclePolicy(lr_max=0.01, moms=(0.9, 0.8, 0.9))))
    assert policy(HYPERS)["lr"](0.25) == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pct_start": 0.0}, r"pct_start must be in \(0, 1\)"),
        ({"pct_start": 1.0}, r"pct_start must be in \(0, 1\)"),
        ({"pct_start": -0.2}, r"pct_start must be in \(0, 1\)"),
        ({"lr_max": 0.0}, "lr_max must be a positive number"),
        ({"lr_max": -1e-3}, "lr_max must be a positive number"),
        ({"lr_max": float("nan")}, "lr_max must be a positive number"),
        ({"lr_max": [1e-3, 0.0]}, "lr_max must be a positive number"),
        ({"div": 0.0}, "div must be a positive number"),
        ({"div_final": -5.0}, "div_final must be a positive number"),
        ({"moms": (0.9, 0.8)}, "moms must be 3 numbers"),
        ({"moms": (0.9, 0.8, 0.9, 0.1)}, "moms must be 3 numbers"),
        ({"moms": 0.9}, "moms must be 3 numbers"),
        ({"moms": ("a", "b", "c")}, "moms must be 3 numbers"),
        ({"wd": -0.1}, "wd must be a number >= 0"),
    ],
)
def test_one_cycle_bad_input(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        OneCyclePolicy(**kwargs)


def test_other_policies_bad_input():
    with pytest.raises(ValueError, match=r"pct_start must be in \(0, 1\)"):
        FlatCosPolicy(pct_start=1.2)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        FlatCosPolicy(lr=0)
    with pytest.raises(ValueError, match="n_cycles must be a positive integer"):
        SGDRPolicy(n_cycles=0, cycle_len=1)
    with pytest.raises(ValueError, match="cycle_mult must be a positive integer"):
        SGDRPolicy(n_cycles=1, cycle_len=1, cycle_mult=1.5)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        ConstantPolicy(lr=-1)
    with pytest.raises(TypeError, match="lr_max must be a positive number"):
        OneCyclePolicy(lr_max="big")
