"""Shared test helpers: run an optimizer on a fixed gradient sequence, compare results."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


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
