"""Reading hyper-parameters from torch optimizers and AccelOptimizer."""

import torch

from lightning_accel.monitor.hyperparams import (
    flat_scalars,
    group_hypers,
    hparam_value,
    optimizer_label,
)
from lightning_accel.optim.callbacks import adam_step, average_grad, average_sqr_grad, step_stat
from lightning_accel.optim.optimizer import AccelOptimizer


def _params():
    return [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))]


def test_torch_adam_groups_give_numbers_only_with_betas_split():
    a, b = _params()
    opt = torch.optim.Adam([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1, betas=(0.8, 0.9))
    hypers = group_hypers(opt)
    assert hypers[0] == {
        "lr": 0.1,
        "betas.0": 0.8,
        "betas.1": 0.9,
        "eps": 1e-8,
        "weight_decay": 0.0,
    }
    assert hypers[1]["lr"] == 0.5
    # Flags (amsgrad, foreach, maximize, ...) are not hyper-parameters to plot.
    assert all(isinstance(v, float) for h in hypers for v in h.values())


def test_accel_optimizer_groups_use_its_own_hyper_parameter_names():
    cbs = [average_grad, average_sqr_grad, step_stat, adam_step]
    opt = AccelOptimizer(_params(), cbs, lr=0.01, mom=0.9, sqr_mom=0.99, eps=1e-5, wd=0.0)
    (hypers,) = group_hypers(opt)
    assert {"lr": 0.01, "mom": 0.9, "sqr_mom": 0.99, "eps": 1e-5, "wd": 0.0}.items() <= (
        hypers.items()
    )
    # torch's mirrored aliases would duplicate mom/sqr_mom.
    assert "betas.0" not in hypers and "momentum" not in hypers
    assert optimizer_label(opt) == "average_grad+average_sqr_grad+step_stat+adam_step"
    assert optimizer_label(torch.optim.SGD(_params(), lr=0.1)) == "SGD"


def test_flat_scalars_and_hparam_values():
    values = {"params": [1], "lr": torch.tensor(0.25), "flag": True, "name": "x", "m": (1, "a")}
    assert flat_scalars(values) == {"lr": 0.25, "m.0": 1.0}
    assert hparam_value(None) == "None"
    assert hparam_value(torch.tensor(2.0)) == 2.0
    assert hparam_value([1, 2]) == "[1, 2]"
    assert hparam_value(3) == 3
