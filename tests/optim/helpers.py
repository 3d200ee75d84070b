"""Shared test helpers: run an optimizer on a fixed gradient sequence, compare results."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import OneCycleLR


def gradient_sequence(
    shapes: Sequence[tuple[int, ...]], steps: int, seed: int
) -> list[list[Tensor]]:
    """`steps` lists of float32 gradients, one per shape, reproducible from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen) for s in shapes] for _ in range(steps)]


def initial_params(shapes: Sequence[tuple[int, ...]], seed: int) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed + 1)
    return [torch.randn(s, generator=gen) for s in shapes]


def run(
    make_opt: Callable[[list[Tensor]], torch.optim.Optimizer],
    init: list[Tensor],
    grads: list[list[Tensor]],
) -> list[Tensor]:
    """Fresh copies of `init`, stepped once per gradient list; returns the final weights."""
    params = [p.clone().requires_grad_() for p in init]
    opt = make_opt(params)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in params]


def max_rel_diff(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    """Largest |a - b| / |b| over all elements, with |b| floored at 1e-3 to keep near-zeros sane."""
    return max(
        ((x.double() - y.double()).abs() / y.double().abs().clamp_min(1e-3)).max().item()
        for x, y in zip(a, b)
    )


def snapshot(opt) -> dict:
    """Everything load_state_dict could change: state (tensors cloned) and param groups."""
    return {
        "state": {
            p: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
            for p, s in opt.state.items()
        },
        "groups": [
            {k: (list(v) if k == "params" else copy.deepcopy(v)) for k, v in g.items()}
            for g in opt.param_groups
        ],
    }


def assert_unchanged(before: dict, opt) -> None:
    after = snapshot(opt)
    assert before["state"].keys() == after["state"].keys()
    for p, state in before["state"].items():
        assert state.keys() == after["state"][p].keys()
        for key, value in state.items():
            other = after["state"][p][key]
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, other) and value.dtype == other.dtype, key
            else:
                assert value == other and type(value) is type(other), key
    assert len(before["groups"]) == len(after["groups"])
    for a, b in zip(before["groups"], after["groups"]):
        assert a.keys() == b.keys()
        assert all(x is y for x, y in zip(a["params"], b["params"]))
        assert {k: v for k, v in a.items() if k != "params"} == {
            k: v for k, v in b.items() if k != "params"
        }


class Regression(pl.LightningModule):
    """A tiny MLP whose optimizer (and optional one-cycle schedule) comes from outside."""

    def __init__(self, opt_func, one_cycle_steps=None):
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        self.opt_func, self.one_cycle_steps = opt_func, one_cycle_steps

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x).float(), y)

    def configure_optimizers(self):
        opt = self.opt_func(self.parameters())
        if self.one_cycle_steps is None:
            return opt
        sched = OneCycleLR(opt, max_lr=0.05, total_steps=self.one_cycle_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def resumed_across_impls(
    recipe: Callable[..., torch.optim.Optimizer],
    first: str,
    then: str,
    shapes: Sequence[tuple[int, ...]],
) -> tuple[list[Tensor], list[Tensor]]:
    """Six steps of `recipe(lr=1e-2)` on random gradients: three under impl `first`, a
    `state_dict` round trip into a fresh optimizer under `then`, three more; and the same six
    under per_param without a break. Returns (the resumed run's parameters, the reference's)."""
    gen = torch.Generator().manual_seed(7)
    init = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(6)]

    def stepped(opt, ps, gs):
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()

    ref_ps = [torch.nn.Parameter(x.clone()) for x in init]
    ref = recipe(ref_ps, lr=1e-2, impl="per_param")
    for gs in grads:
        stepped(ref, ref_ps, gs)
    ps = [torch.nn.Parameter(x.clone()) for x in init]
    opt = recipe(ps, lr=1e-2, impl=first)
    for gs in grads[:3]:
        stepped(opt, ps, gs)
    resumed = recipe(ps, lr=1e-2, impl=then)
    resumed.load_state_dict(opt.state_dict())
    for gs in grads[3:]:
        stepped(resumed, ps, gs)
    return ps, ref_ps
