"""Hyper-parameters by the chapter's names, on AccelOptimizer and on torch.optim optimizers."""

import pytest
import torch

from lightning_accel.optim import recipes
from lightning_accel.optim.callbacks import sgd_step
from lightning_accel.optim.optimizer import AccelOptimizer
from lightning_accel.schedule.hypers import get_hyper, hyper_names, set_hyper, snapshot_hypers


def _groups():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    return [{"params": a.parameters(), "lr": 1e-3}, {"params": b.parameters(), "lr": 1e-2}]


def test_torch_names_map_to_the_chapters():
    sgd = torch.optim.SGD(_groups(), lr=0.1, momentum=0.9, weight_decay=0.01)
    assert {"lr", "mom", "wd"} <= set(hyper_names(sgd))
    set_hyper(sgd, "mom", 0.8)
    set_hyper(sgd, "lr", [0.5, 0.25])
    assert [g["momentum"] for g in sgd.param_groups] == [0.8, 0.8]
    assert [g["lr"] for g in sgd.param_groups] == [0.5, 0.25]
    adam = torch.optim.Adam(_groups(), betas=(0.9, 0.99), eps=1e-8)
    set_hyper(adam, "mom", 0.85)
    set_hyper(adam, "sqr_mom", 0.98)
    assert adam.param_groups[1]["betas"] == (0.85, 0.98)
    assert get_hyper(adam, "eps") == [1e-8, 1e-8]
    rms = torch.optim.RMSprop(_groups(), alpha=0.97)
    assert get_hyper(rms, "sqr_mom") == [0.97, 0.97]


def test_accel_optimizer_goes_through_its_own_api():
    opt = recipes.Adam(_groups(), lr=1e-3)
    set_hyper(opt, "mom", 0.8)
    set_hyper(opt, "lr", [2e-3, 3e-3])
    assert [h["mom"] for h in opt.hypers] == [0.8, 0.8]
    assert [g["betas"][0] for g in opt.param_groups] == [0.8, 0.8]  # mirrored for torch
    assert get_hyper(opt, "lr") == [2e-3, 3e-3]
    assert snapshot_hypers(opt)[1]["lr"] == 3e-3
    plain = AccelOptimizer(torch.nn.Linear(2, 1).parameters(), [sgd_step], lr=0.1)
    assert "mom" not in hyper_names(plain)


def test_unknown_names_and_wrong_group_counts_are_refused():
    sgd = torch.optim.SGD(_groups(), lr=0.1)
    with pytest.raises(ValueError, match="no hyper-parameter 'sqr_mom'; it has: .*lr"):
        set_hyper(sgd, "sqr_mom", 0.9)
    with pytest.raises(ValueError, match="returned 3 values, but the optimizer has 2"):
        set_hyper(sgd, "lr", [1, 2, 3])
    assert [g["lr"] for g in sgd.param_groups] == [1e-3, 1e-2]  # nothing half-applied
