"""Stat callbacks: the running statistics an optimizer keeps per parameter.

Each is called as `cb(p, **{**state, **hypers})` and returns a dict of new state; it takes the
state it keeps as an optional argument (`grad_avg=None`) so the first step can create it, and its
default hyper-parameters sit in `cb.defaults`. Below each callback is its multi-tensor form
(`cb.foreach`), the same statistic for a list of parameters (see `tensor_lists`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .tensor_lists import Scalar, add_cmul_, each, grads, multi_tensor_form, state_list, whole_norms


def average_grad(
    p: Tensor, mom: float, dampening: bool = False, grad_avg: Tensor | None = None, **kwargs
) -> dict:
    """Moving average of the gradients: grad_avg = mom * grad_avg + (1 - mom if damped) * grad."""
    if grad_avg is None:
        grad_avg = torch.zeros_like(p.grad.data)
    if dampening:
        # lerp is the damped average in one rounding step, as torch's Adam computes it.
        grad_avg.lerp_(p.grad.data, 1 - mom)
    else:
        grad_avg.mul_(mom).add_(p.grad.data)
    return {"grad_avg": grad_avg}


average_grad.defaults = dict(mom=0.9)


@multi_tensor_form(average_grad, elementwise=True)
def _average_grad_foreach(
    params: list[Tensor], states: list[dict], mom: Scalar, dampening: bool = False, **hypers: Any
) -> None:
    avgs = state_list(params, states, "grad_avg")
    if dampening and isinstance(mom, Tensor):
        # lerp's own formula; inductor does not fuse a lerp with tensor weights.
        torch._foreach_add_(
            avgs, torch._foreach_mul(torch._foreach_sub(grads(params), avgs), [1 - mom] * len(avgs))
        )
    elif dampening:
        torch._foreach_lerp_(avgs, grads(params), 1 - mom)
    else:
        torch._foreach_mul_(avgs, each(avgs, mom))
        torch._foreach_add_(avgs, grads(params))


def average_sqr_grad(
    p: Tensor, sqr_mom: float, dampening: bool = True, sqr_avg: Tensor | None = None, **kwargs
) -> dict:
    """Moving average of the squared gradients, damped by default."""
    if sqr_avg is None:
        sqr_avg = torch.zeros_like(p.grad.data)
    damp = 1 - sqr_mom if dampening else 1.0
    sqr_avg.mul_(sqr_mom).addcmul_(p.grad.data, p.grad.data, value=damp)
    return {"sqr_avg": sqr_avg}


average_sqr_grad.defaults = dict(sqr_mom=0.99)


@multi_tensor_form(average_sqr_grad, elementwise=True)
def _average_sqr_grad_foreach(
    params: list[Tensor], states: list[dict], sqr_mom: Scalar, dampening: bool = True, **hypers: Any
) -> None:
    sqrs = state_list(params, states, "sqr_avg")
    gs = grads(params)
    torch._foreach_mul_(sqrs, each(sqrs, sqr_mom))
    add_cmul_(sqrs, gs, gs, 1 - sqr_mom if dampening else 1.0)


def step_stat(p: Tensor, step: int = 0, **kwargs) -> dict:
    """Count the steps taken (needed for debiasing)."""
    return {"step": step + 1}


@multi_tensor_form(step_stat, elementwise=True)
def _step_stat_foreach(params: list[Tensor], states: list[dict], **hypers: Any) -> None:
    # Each parameter counts its own steps: one that had no gradient missed a step.
    for state in states:
        state["step"] = state.get("step", 0) + 1


def larc_rate(
    p_norm: Tensor, g_norm: Tensor, lr: Scalar, trust_coeff: Scalar, wd: Scalar, eps: Scalar, clip
) -> Tensor:
    """LARC's layer-wise rate from the norms of a layer's weights and gradient (any shape)."""
    local_lr = lr * trust_coeff * p_norm / (g_norm + p_norm * wd + eps)
    return torch.clamp(local_lr, max=lr) if clip else local_lr


def larc_layer_lr(
    p: Tensor, lr: float, trust_coeff: float, wd: float, eps: float, clip: bool = True, **kwargs
) -> dict:
    """LARC/LARS: a layer-wise rate, lr * trust_coeff * |p| / (|g| + wd |p| + eps), capped at lr
    when `clip` (LARC) and not when not (LARS)."""
    p_norm, g_norm = torch.linalg.vector_norm(p.data), torch.linalg.vector_norm(p.grad.data)
    return {"local_lr": larc_rate(p_norm, g_norm, lr, trust_coeff, wd, eps, clip)}


larc_layer_lr.defaults = dict(trust_coeff=0.02, wd=0.0, eps=1e-8)


@multi_tensor_form(larc_layer_lr)
def _larc_layer_lr_foreach(
    params: list[Tensor],
    states: list[dict],
    lr: Scalar,
    trust_coeff: Scalar,
    wd: Scalar,
    eps: Scalar,
    clip: bool = True,
    shard_groups: tuple = (),
    **hypers: Any,
) -> None:
    # Every layer's two norms in one kernel (and one collective when sharded), no host sync.
    norms = whole_norms([*params, *grads(params)], shard_groups)
    n = len(params)
    rates = larc_rate(norms[:n], norms[n:], lr, trust_coeff, wd, eps, clip)
    for state, rate in zip(states, rates.unbind()):
        state["local_lr"] = rate


__all__ = ["average_grad", "average_sqr_grad", "step_stat", "larc_layer_lr", "larc_rate"]
