"""Step callbacks: what moves the weights (and weight decay, which acts on them or on the gradient).

Each is called as `cb(p, **{**state, **hypers})`; its default hyper-parameters sit in
`cb.defaults`. Below each callback is its multi-tensor form (`cb.foreach`), the same step for a
list of parameters (see `tensor_lists`). Scalar math both forms need (debiasing, RAdam's
rectification, LAMB's trust ratio) is written once, in a function of its own.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .tensor_lists import (
    Scalar,
    add_cdiv_,
    add_scaled_,
    each,
    flag,
    grads,
    multi_tensor_form,
    optional_list,
    per_step,
    sqrt,
    whole_norms,
)


def sgd_step(p: Tensor, lr: float, **kwargs) -> None:
    """Plain gradient descent: p -= lr * grad."""
    p.data.add_(p.grad.data, alpha=-lr)


@multi_tensor_form(sgd_step, elementwise=True)
def _sgd_step_foreach(params: list[Tensor], states: list[dict], lr: Scalar, **hypers: Any) -> None:
    add_scaled_(params, grads(params), -lr)


def weight_decay(p: Tensor, lr: float, wd: float, do_wd: bool = True, **kwargs) -> None:
    """Decoupled weight decay: shrink p by a factor (1 - lr * wd)."""
    if do_wd and wd != 0:
        p.data.mul_(1 - lr * wd)


weight_decay.defaults = dict(wd=0.0)


def _decayed(params: list[Tensor], states: list[dict], hypers: dict, wd: Scalar) -> list[Tensor]:
    """The parameters weight decay applies to: all but those flagged `do_wd=False`."""
    if not isinstance(wd, Tensor) and wd == 0:
        return []
    return [p for p, s in zip(params, states) if flag(s, hypers, "do_wd", True)]


@multi_tensor_form(weight_decay, elementwise=True)
def _weight_decay_foreach(
    params: list[Tensor], states: list[dict], lr: Scalar, wd: Scalar, **hypers: Any
) -> None:
    decayed = _decayed(params, states, hypers, wd)
    if decayed:
        torch._foreach_mul_(decayed, each(decayed, 1 - lr * wd))


def l2_reg(p: Tensor, wd: float, do_wd: bool = True, **kwargs) -> None:
    """L2 regularisation: add wd * p to the gradient."""
    if do_wd and wd != 0:
        p.grad.data.add_(p.data, alpha=wd)


l2_reg.defaults = dict(wd=0.0)


@multi_tensor_form(l2_reg, elementwise=True)
def _l2_reg_foreach(params: list[Tensor], states: list[dict], wd: Scalar, **hypers: Any) -> None:
    decayed = _decayed(params, states, hypers, wd)
    if decayed:
        add_scaled_(grads(decayed), decayed, wd)


def momentum_step(p: Tensor, lr: float, grad_avg: Tensor, **kwargs) -> None:
    """Step along the averaged gradient."""
    p.data.add_(grad_avg, alpha=-lr)


@multi_tensor_form(momentum_step, elementwise=True)
def _momentum_step_foreach(
    params: list[Tensor], states: list[dict], lr: Scalar, **hypers: Any
) -> None:
    add_scaled_(params, [s["grad_avg"] for s in states], -lr)


def rms_prop_step(
    p: Tensor, lr: float, sqr_avg: Tensor, eps: float, grad_avg: Tensor | None = None, **kwargs
) -> None:
    """RMSProp: step along the (averaged) gradient divided by the root of sqr_avg."""
    denom = sqr_avg.sqrt().add_(eps)
    p.data.addcdiv_(grad_avg if grad_avg is not None else p.grad.data, denom, value=-lr)


rms_prop_step.defaults = dict(eps=1e-8)


@multi_tensor_form(rms_prop_step, elementwise=True)
def _rms_prop_step_foreach(
    params: list[Tensor], states: list[dict], lr: Scalar, eps: Scalar, **hypers: Any
) -> None:
    denom = torch._foreach_sqrt([s["sqr_avg"] for s in states])
    torch._foreach_add_(denom, each(denom, eps))
    add_cdiv_(params, optional_list(params, states, "grad_avg"), denom, -lr)


def debias(mom: float, damp: float, step: int) -> float:
    """Sum of the weights a moving average gave the gradients so far: damp * (1 - mom^t)/(1 - mom).

    Dividing by it turns the zero-initialised average into an unbiased one.
    """
    return damp * (1 - mom**step) / (1 - mom)


def adam_step(
    p: Tensor,
    lr: float,
    mom: float,
    step: int,
    sqr_mom: float,
    grad_avg: Tensor,
    sqr_avg: Tensor,
    eps: float,
    **kwargs,
) -> None:
    """Adam: debiased average gradient over the root of the debiased average squared gradient."""
    debias1 = debias(mom, 1 - mom, step)
    debias2 = debias(sqr_mom, 1 - sqr_mom, step)
    denom = sqr_avg.sqrt().div_(math.sqrt(debias2)).add_(eps)
    p.data.addcdiv_(grad_avg, denom, value=-lr / debias1)


adam_step.defaults = dict(eps=1e-5)


@multi_tensor_form(adam_step, elementwise=True)
def _adam_step_foreach(
    params: list[Tensor],
    states: list[dict],
    lr: Scalar,
    mom: Scalar,
    sqr_mom: Scalar,
    eps: Scalar,
    **hypers: Any,
) -> None:
    # sqrt(sqr_avg) / sqrt(debias2) + eps: the per-parameter callback's (and torch's) rounding.
    denom = torch._foreach_sqrt([s["sqr_avg"] for s in states])
    torch._foreach_div_(denom, per_step(states, lambda t: sqrt(debias(sqr_mom, 1 - sqr_mom, t))))
    torch._foreach_add_(denom, each(denom, eps))
    values = per_step(states, lambda t: -lr / debias(mom, 1 - mom, t))
    add_cdiv_(params, [s["grad_avg"] for s in states], denom, values)


def _debiased_sqr(states: list[dict], sqr_mom: Scalar) -> list[Tensor]:
    """sqr_avg / debias2 for each parameter (a new list)."""
    debias2 = per_step(states, lambda t: debias(sqr_mom, 1 - sqr_mom, t))
    return torch._foreach_div([s["sqr_avg"] for s in states], debias2)


def radam_rectification(step: Any, sqr_mom: Scalar) -> tuple[Any, Any]:
    """RAdam's (rectified?, rectification factor v) at `step` (a number or a tensor).

    r approximates the length of the simple moving average the squared-gradient average stands
    for; while r <= 5 its variance is intractable and RAdam takes a plain momentum step (v then
    does not matter: 0 for numbers, 1 for tensors, where it must stay finite).
    """
    r_inf = 2 / (1 - sqr_mom) - 1
    r = r_inf - 2 * step * sqr_mom**step / (1 - sqr_mom**step)
    if isinstance(r, Tensor):
        rect = r > 5
        ratio = ((r - 4) * (r - 2) * r_inf) / ((r_inf - 4) * (r_inf - 2) * r)
        return rect, torch.where(rect, ratio, torch.ones_like(ratio)).sqrt()
    if r > 5:
        return True, math.sqrt(((r - 4) * (r - 2) * r_inf) / ((r_inf - 4) * (r_inf - 2) * r))
    return False, 0.0


def softplus(x: Tensor, beta: Scalar) -> Tensor:
    """F.softplus with a beta that may be a tensor (same threshold of 20 as torch)."""
    if not isinstance(beta, Tensor):
        return F.softplus(x, beta)
    bx = beta * x
    return torch.where(bx > 20, x, torch.log1p(torch.exp(bx)) / beta)


def radam_step(
    p: Tensor,
    lr: float,
    mom: float,
    step: int,
    sqr_mom: float,
    grad_avg: Tensor,
    sqr_avg: Tensor,
    eps: float,
    beta: float,
    **kwargs,
) -> None:
    """RAdam: Adam with its adaptive term rectified, and plain momentum while its variance is
    intractable (approximated SMA length r <= 5)."""
    debias1 = debias(mom, 1 - mom, step)
    rectified, v = radam_rectification(step, sqr_mom)
    if rectified:
        denom = (sqr_avg / debias(sqr_mom, 1 - sqr_mom, step)).sqrt()
        if eps:
            denom += eps
        if beta:
            denom = softplus(denom, beta)
        p.data.addcdiv_(grad_avg, denom, value=-lr * v / debias1)
    else:
        p.data.add_(grad_avg, alpha=-lr / debias1)


radam_step.defaults = dict(eps=1e-5, beta=0.0)


@multi_tensor_form(radam_step, elementwise=True)
def _radam_step_foreach(
    params: list[Tensor],
    states: list[dict],
    lr: Scalar,
    mom: Scalar,
    sqr_mom: Scalar,
    eps: Scalar,
    beta: Scalar,
    **hypers: Any,
) -> None:
    # Each parameter is rectified or not according to its own step count.
    terms = per_step(states, lambda t: radam_rectification(t, sqr_mom))
    debias1 = per_step(states, lambda t: debias(mom, 1 - mom, t))
    avgs = [s["grad_avg"] for s in states]
    if isinstance(lr, Tensor):
        _radam_tensor_(params, states, avgs, terms, debias1, lr, sqr_mom, eps, beta)
        return
    rect = [i for i, (r, _) in enumerate(terms) if r]
    plain = [i for i, (r, _) in enumerate(terms) if not r]
    if rect:
        denom = _debiased_sqr([states[i] for i in rect], sqr_mom)
        torch._foreach_sqrt_(denom)
        if eps:
            torch._foreach_add_(denom, eps)
        if beta:
            denom = [softplus(d, beta) for d in denom]
        values = [-lr * terms[i][1] / debias1[i] for i in rect]
        add_cdiv_([params[i] for i in rect], [avgs[i] for i in rect], denom, values)
    if plain:
        alphas = [-lr / debias1[i] for i in plain]
        add_scaled_([params[i] for i in plain], [avgs[i] for i in plain], alphas)


def _radam_tensor_(
    params: list[Tensor],
    states: list[dict],
    avgs: list[Tensor],
    terms: list[tuple[Tensor, Tensor]],
    debias1: list[Tensor],
    lr: Tensor,
    sqr_mom: Tensor,
    eps: Tensor,
    beta: Tensor,
) -> None:
    """RAdam with tensor scalars: both branches computed, the rectified one selected by `where`
    (no host synchronisation, no recompilation when the branch flips)."""
    denom = _debiased_sqr(states, sqr_mom)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, each(denom, eps))
    denom = [torch.where(beta != 0, softplus(d, beta), d) for d in denom]
    for p, avg, den, (rect, v), d1 in zip(params, avgs, denom, terms, debias1):
        direction = torch.where(rect, avg / den * v, avg)
        p.sub_(lr / d1 * direction)


def qhadam_step(
    p: Tensor,
    lr: float,
    mom: float,
    sqr_mom: float,
    sqr_avg: Tensor,
    nu_1: float,
    nu_2: float,
    step: int,
    grad_avg: Tensor,
    eps: float,
    **kwargs,
) -> None:
    """QHAdam: Adam whose two averages are each mixed with the current gradient (nu_1, nu_2)."""
    debias1 = debias(mom, 1 - mom, step)
    debias2 = debias(sqr_mom, 1 - sqr_mom, step)
    g = p.grad.data
    num = (1 - nu_1) * g + nu_1 * (grad_avg / debias1)
    denom = ((1 - nu_2) * g * g + nu_2 * (sqr_avg / debias2)).sqrt() + eps
    p.data.addcdiv_(num, denom, value=-lr)


qhadam_step.defaults = dict(eps=1e-8, nu_1=0.7, nu_2=1.0)


@multi_tensor_form(qhadam_step, elementwise=True)
def _qhadam_step_foreach(
    params: list[Tensor],
    states: list[dict],
    lr: Scalar,
    mom: Scalar,
    sqr_mom: Scalar,
    nu_1: Scalar,
    nu_2: Scalar,
    eps: Scalar,
    **hypers: Any,
) -> None:
    gs = grads(params)
    debias1 = per_step(states, lambda t: debias(mom, 1 - mom, t))
    num = torch._foreach_div([s["grad_avg"] for s in states], debias1)
    torch._foreach_mul_(num, each(num, nu_1))
    torch._foreach_add_(num, torch._foreach_mul(gs, each(gs, 1 - nu_1)))
    denom = _debiased_sqr(states, sqr_mom)
    torch._foreach_mul_(denom, each(denom, nu_2))
    g2 = torch._foreach_mul(gs, each(gs, 1 - nu_2))
    torch._foreach_mul_(g2, gs)
    torch._foreach_add_(denom, g2)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, each(denom, eps))
    add_cdiv_(params, num, denom, -lr)


def larc_step(p: Tensor, local_lr: Tensor, grad_avg: Tensor | None = None, **kwargs) -> None:
    """Step along the (averaged) gradient with the layer-wise rate."""
    p.data.sub_(local_lr * (p.grad.data if grad_avg is None else grad_avg))


@multi_tensor_form(larc_step, elementwise=True)
def _larc_step_foreach(params: list[Tensor], states: list[dict], **hypers: Any) -> None:
    direction = optional_list(params, states, "grad_avg")
    torch._foreach_sub_(params, torch._foreach_mul(direction, [s["local_lr"] for s in states]))


def trust_ratio(w_norm: Tensor, u_norm: Tensor) -> Tensor:
    """LAMB's trust ratio |w| / |update|, capped at 10, and 1 where either norm is zero.

    Norms and not the paper's root-mean-squares: their ratio is the same, and norms of sharded
    parameters add up over the shards. The tensor form avoids a host sync per parameter.
    """
    return torch.where(
        (w_norm == 0) | (u_norm == 0), torch.ones_like(w_norm), (w_norm / u_norm).clamp(max=10)
    )


def lamb_step(
    p: Tensor,
    lr: float,
    mom: float,
    step: int,
    sqr_mom: float,
    grad_avg: Tensor,
    sqr_avg: Tensor,
    eps: float,
    **kwargs,
) -> dict:
    """LAMB: the Adam step, rescaled per layer by the trust ratio |p| / |step|, capped at 10.

    Returns the trust ratio as state (`trust_ratio`), so monitors can show it.
    """
    debias1 = debias(mom, 1 - mom, step)
    debias2 = debias(sqr_mom, 1 - sqr_mom, step)
    update = (grad_avg / debias1) / ((sqr_avg / debias2).sqrt() + eps)
    q = trust_ratio(torch.linalg.vector_norm(p.data), torch.linalg.vector_norm(update))
    p.data.sub_(lr * q * update)
    return {"trust_ratio": q}


lamb_step.defaults = dict(eps=1e-6, wd=0.0)


@multi_tensor_form(lamb_step)
def _lamb_step_foreach(
    params: list[Tensor],
    states: list[dict],
    lr: Scalar,
    mom: Scalar,
    sqr_mom: Scalar,
    eps: Scalar,
    shard_groups: tuple = (),
    **hypers: Any,
) -> None:
    debias1 = per_step(states, lambda t: debias(mom, 1 - mom, t))
    update = torch._foreach_div([s["grad_avg"] for s in states], debias1)
    denom = _debiased_sqr(states, sqr_mom)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, each(denom, eps))
    torch._foreach_div_(update, denom)
    # Both norms of every layer in one kernel (and one collective when sharded).
    norms = whole_norms([*params, *update], shard_groups)
    ratios = trust_ratio(norms[: len(params)], norms[len(params) :]).unbind()
    torch._foreach_sub_(params, torch._foreach_mul(update, [lr * r for r in ratios]))
    for state, ratio in zip(states, ratios):
        state["trust_ratio"] = ratio


__all__ = [
    "sgd_step",
    "weight_decay",
    "l2_reg",
    "momentum_step",
    "rms_prop_step",
    "debias",
    "adam_step",
    "radam_step",
    "radam_rectification",
    "qhadam_step",
    "larc_step",
    "lamb_step",
    "trust_ratio",
]
