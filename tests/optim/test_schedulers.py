"""torch's LR schedulers drive AccelOptimizer's hyper-parameters, momentum included."""

import pytest
import torch
from torch.optim.lr_scheduler import OneCycleLR, StepLR

from lightning_accel.optim import SGD, Adam, ranger

from .helpers import gradient_sequence, initial_params, max_rel_diff

SHAPES = [(4, 5), (5,)]
STEPS = 20


def _train(make_opt, make_sched, read):
    params = [p.clone().requires_grad_() for p in initial_params(SHAPES, 0)]
    opt = make_opt(params)
    sched = make_sched(opt)
    seen = []
    for gs in gradient_sequence(SHAPES, STEPS, 0):
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        sched.step()
        seen.append(read(opt.param_groups[0]))
    return params, seen


def _one_cycle(opt):
    return OneCycleLR(opt, max_lr=0.05, total_steps=STEPS, cycle_momentum=True)


@pytest.mark.parametrize(
    "ours, theirs, torch_key",
    [
        (
            lambda ps: Adam(ps, lr=0.01, impl="per_param"),
            lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.9, 0.99), eps=1e-5),
            "betas",
        ),
        (
            lambda ps: SGD(ps, lr=0.01, mom=0.9, decouple_wd=False, impl="per_param"),
            lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9),
            "momentum",
        ),
    ],
    ids=["adam-betas", "sgd-momentum"],
)
def test_one_cycle_schedules_mom_exactly_as_for_torch_optimizers(ours, theirs, torch_key):
    def read_ours(g):
        return (g["lr"], g["mom"])

    def read_theirs(g):
        return (g["lr"], g["betas"][0] if torch_key == "betas" else g["momentum"])

    ps, ours_seen = _train(ours, _one_cycle, read_ours)
    ref, theirs_seen = _train(theirs, _one_cycle, read_theirs)
    assert ours_seen == theirs_seen
    assert len({m for _, m in ours_seen}) > 5  # momentum really cycled
    # The scheduled momentum is the one the callbacks used: the weights agree too.
    assert max_rel_diff(ps, ref) <= 1e-6


def test_step_lr_scales_lr_in_every_group():
    def two_groups(ps):
        return Adam([[ps[0]], [ps[1]]], lr=0.1)

    _, seen = _train(two_groups, lambda o: StepLR(o, step_size=5, gamma=0.5), lambda g: g["lr"])
    assert seen[3:6] == pytest.approx([0.1, 0.05, 0.05])
    assert seen[-1] == pytest.approx(0.1 * 0.5**4)


def test_schedulers_work_through_lookahead():
    _, seen = _train(lambda ps: ranger(ps, lr=0.01), _one_cycle, lambda g: g["mom"])
    _, plain = _train(
        lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.95, 0.99)),
        _one_cycle,
        lambda g: g["betas"][0],
    )
    assert seen == plain
