"""Multi-tensor forms of the built-in optimizer callbacks.

A form does for a whole parameter group what its callback does for one parameter, with
`torch._foreach_*` kernels: one dispatch per operation instead of one per operation and
parameter. Signature: `form(params, states, **hypers) -> None`, mutating `states` in place.

Scalars (hyper-parameters, steps) may be Python numbers (eager execution) or 0-d tensors (the
compiled step passes them as tensors so that a schedule changing them does not recompile). Only
the few lines that differ between the two take separate branches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import callbacks as cb
from .callbacks import debias

Scalar = float | Tensor


# -- small vocabulary shared by the forms ------------------------------------------------------


def _grads(params: list[Tensor]) -> list[Tensor]:
    return [p.grad for p in params]


def _flag(state: dict, hypers: dict[str, Any], name: str, default: bool) -> bool:
    """A per-parameter flag, as the per-parameter call sees it: a group value wins over state."""
    return hypers[name] if name in hypers else state.get(name, default)


def _state_list(params: list[Tensor], states: list[dict], key: str) -> list[Tensor]:
    """The state tensors under `key`, created as zeros where missing (first step)."""
    out = []
    for p, state in zip(params, states):
        buf = state.get(key)
        if buf is None:
            buf = state[key] = torch.zeros_like(p.grad)
        out.append(buf)
    return out


def _optional_list(params: list[Tensor], states: list[dict], key: str) -> list[Tensor]:
    """The state tensors under `key`, or the gradient where a parameter has none."""
    return [s[key] if s.get(key) is not None else p.grad for p, s in zip(params, states)]


def _each(xs: list[Tensor], scalar: Any) -> Any:
    """A scalar argument for a foreach op over `xs`: a tensor scalar goes in as a list of it.

    Given one tensor, Dynamo reads it with `.item()` and specialises the program on its value
    (recompiling whenever a schedule changes it); a list of 0-d tensors stays data.
    """
    if isinstance(scalar, Tensor) and scalar.dim() == 0:
        return [scalar] * len(xs)
    return scalar


def _add_scaled_(xs: list[Tensor], ys: list[Tensor], alpha: Any) -> None:
    """xs += alpha * ys; alpha is one number, one tensor, or one number/tensor per parameter."""
    if isinstance(alpha, Tensor) or (isinstance(alpha, list) and isinstance(alpha[0], Tensor)):
        torch._foreach_add_(xs, torch._foreach_mul(ys, _each(ys, alpha)))
    elif isinstance(alpha, list):
        # One kernel per distinct value keeps add's own rounding (usually a single value).
        for value in dict.fromkeys(alpha):
            idx = [i for i, a in enumerate(alpha) if a == value]
            torch._foreach_add_([xs[i] for i in idx], [ys[i] for i in idx], alpha=value)
    else:
        torch._foreach_add_(xs, ys, alpha=alpha)


def _add_cmul_(xs: list[Tensor], a: list[Tensor], b: list[Tensor], value: Scalar) -> None:
    """xs += value * a * b."""
    if isinstance(value, Tensor):
        torch._foreach_add_(xs, torch._foreach_mul(torch._foreach_mul(a, b), _each(a, value)))
    else:
        torch._foreach_addcmul_(xs, a, b, value=value)


def _add_cdiv_(xs: list[Tensor], num: list[Tensor], den: list[Tensor], value: Any) -> None:
    """xs += value * num / den; value is one number or tensor, or one per parameter."""
    if isinstance(value, Tensor) or (isinstance(value, list) and isinstance(value[0], Tensor)):
        torch._foreach_add_(xs, torch._foreach_mul(torch._foreach_div(num, den), _each(num, value)))
    else:
        torch._foreach_addcdiv_(xs, num, den, value)


def _sqrt(x: Any) -> Any:
    return x.sqrt() if isinstance(x, Tensor) else math.sqrt(x)


def _per_step(states: list[dict], fn: Callable[[Any], Any]) -> list[Any]:
    """fn(step) for each parameter, computed once per distinct step count.

    Parameters that missed steps (no gradient) have their own count, hence per-parameter values.
    """
    steps = [s["step"] for s in states]
    tensors = [t for t in steps if isinstance(t, Tensor)]
    if tensors:
        # Compiled steps keep counts in tensors; a parameter new to the group may still hold an int.
        like = tensors[0]
        out = fn(
            torch.stack([torch.as_tensor(t, dtype=like.dtype, device=like.device) for t in steps])
        )
        # Indexing (not unbind) gives the vector one user per parameter, which lets the compiled
        # step compute it once instead of inside every element-wise loop (see compiled.py).
        if isinstance(out, tuple):
            return list(zip(*([x[i] for i in range(len(steps))] for x in out)))
        return [out[i] for i in range(len(steps))]
    cache: dict[int, Any] = {}
    return [cache[t] if t in cache else cache.setdefault(t, fn(t)) for t in steps]


# -- the forms ---------------------------------------------------------------------------------


def sgd_step(params: list[Tensor], states: list[dict], lr: Scalar, **hypers: Any) -> None:
    """Multi-tensor `sgd_step`."""
    _add_scaled_(params, _grads(params), -lr)


def weight_decay(
    params: list[Tensor], states: list[dict], lr: Scalar, wd: Scalar, **hypers: Any
) -> None:
    """Multi-tensor `weight_decay`, skipping parameters whose state says `do_wd=False`."""
    if not isinstance(wd, Tensor) and wd == 0:
        return
    decayed = [p for p, s in zip(params, states) if _flag(s, hypers, "do_wd", True)]
    if decayed:
        torch._foreach_mul_(decayed, _each(decayed, 1 - lr * wd))


def l2_reg(params: list[Tensor], states: list[dict], wd: Scalar, **hypers: Any) -> None:
    """Multi-tensor `l2_reg`, skipping parameters whose state says `do_wd=False`."""
    if not isinstance(wd, Tensor) and wd == 0:
        return
    decayed = [p for p, s in zip(params, states) if _flag(s, hypers, "do_wd", True)]
    if decayed:
        _add_scaled_(_grads(decayed), decayed, wd)


def average_grad(
    params: list[Tensor], states: list[dict], mom: Scalar, dampening: bool = False, **hypers: Any
) -> None:
    """Multi-tensor `average_grad`."""
    avgs = _state_list(params, states, "grad_avg")
    if dampening and isinstance(mom, Tensor):
        # lerp's own formula; inductor does not fuse a lerp with tensor weights.
        grads = _grads(params)
        torch._foreach_add_(
            avgs, torch._foreach_mul(torch._foreach_sub(grads, avgs), [1 - mom] * len(avgs))
        )
    elif dampening:
        # lerp, as the per-parameter callback does: the damped average in one rounding step.
        torch._foreach_lerp_(avgs, _grads(params), 1 - mom)
    else:
        torch._foreach_mul_(avgs, _each(avgs, mom))
        torch._foreach_add_(avgs, _grads(params))


def average_sqr_grad(
    params: list[Tensor], states: list[dict], sqr_mom: Scalar, dampening: bool = True, **hypers: Any
) -> None:
    """Multi-tensor `average_sqr_grad`."""
    sqrs = _state_list(params, states, "sqr_avg")
    grads = _grads(params)
    torch._foreach_mul_(sqrs, _each(sqrs, sqr_mom))
    _add_cmul_(sqrs, grads, grads, 1 - sqr_mom if dampening else 1.0)


def momentum_step(params: list[Tensor], states: list[dict], lr: Scalar, **hypers: Any) -> None:
    """Multi-tensor `momentum_step`."""
    _add_scaled_(params, [s["grad_avg"] for s in states], -lr)


def rms_prop_step(
    params: list[Tensor], states: list[dict], lr: Scalar, eps: Scalar, **hypers: Any
) -> None:
    """Multi-tensor `rms_prop_step`."""
    denom = torch._foreach_sqrt([s["sqr_avg"] for s in states])
    torch._foreach_add_(denom, _each(denom, eps))
    _add_cdiv_(params, _optional_list(params, states, "grad_avg"), denom, -lr)


def step_stat(params: list[Tensor], states: list[dict], **hypers: Any) -> None:
    """Multi-tensor `step_stat`: each parameter counts its own steps."""
    for state in states:
        state["step"] = state.get("step", 0) + 1


def _debiased_sqr(states: list[dict], sqr_mom: Scalar) -> list[Tensor]:
    """sqr_avg / debias2 for each parameter (a new list)."""
    debias2 = _per_step(states, lambda t: debias(sqr_mom, 1 - sqr_mom, t))
    return torch._foreach_div([s["sqr_avg"] for s in states], debias2)


def adam_step(
    params: list[Tensor],
    states: list[dict],
    lr: Scalar,
    mom: Scalar,
    sqr_mom: Scalar,
    eps: Scalar,
    **hypers: Any,
) -> None:
    """Multi-tensor `adam_step`."""
    # sqrt(sqr_avg) / sqrt(debias2) + eps: the per-parameter callback's (and torch's) rounding.
    denom = torch._foreach_sqrt([s["sqr_avg"] for s in states])
    torch._foreach_div_(denom, _per_step(states, lambda t: _sqrt(debias(sqr_mom, 1 - sqr_mom, t))))
    torch._foreach_add_(denom, _each(denom, eps))
    values = _per_step(states, lambda t: -lr / debias(mom, 1 - mom, t))
    _add_cdiv_(params, [s["grad_avg"] for s in states], denom, values)


def _radam_terms(step: Any, sqr_mom: Scalar) -> tuple[Any, Any]:
    """(rectified?, rectification factor v) of RAdam at `step`; v matters only where rectified."""
    r_inf = 2 / (1 - sqr_mom) - 1
    r = r_inf - 2 * step * sqr_mom**step / (1 - sqr_mom**step)
    if isinstance(r, Tensor):
        rect = r > 5
        ratio = ((r - 4) * (r - 2) * r_inf) / ((r_inf - 4) * (r_inf - 2) * r)
        return rect, torch.where(rect, ratio, torch.ones_like(ratio)).sqrt()
    if r > 5:
        return True, math.sqrt(((r - 4) * (r - 2) * r_inf) / ((r_inf - 4) * (r_inf - 2) * r))
    return False, 0.0


def _softplus(x: Tensor, beta: Scalar) -> Tensor:
    """F.softplus with a beta that may be a tensor (same threshold of 20 as torch)."""
    if not isinstance(beta, Tensor):
        return F.softplus(x, beta)
    bx = beta * x
    return torch.where(bx > 20, x, torch.log1p(torch.exp(bx)) / beta)


def radam_step(
    params: list[Tensor],
    states: list[dict],
    lr: Scalar,
    mom: Scalar,
    sqr_mom: Scalar,
    eps: Scalar,
    beta: Scalar,
    **hypers: Any,
) -> None:
    """Multi-tensor `radam_step`: rectified Adam, or plain momentum while r <= 5 (per parameter)."""
    terms = _per_step(states, lambda t: _radam_terms(t, sqr_mom))
    debias1 = _per_step(states, lambda t: debias(mom, 1 - mom, t))
    avgs = [s["grad_avg"] for s in states]
    if isinstance(lr, Tensor):
        _radam_tensor_(params, states, avgs, terms, debias1, lr, sqr_mom, eps, beta)
        return
    rect = [i for i, (r, _) in enumerate(terms) if r]
    plain = [i for i, (r, _) in enumerate(terms) if not r]
    if rect:
        sub_states = [states[i] for i in rect]
        denom = _debiased_sqr(sub_states, sqr_mom)
        torch._foreach_sqrt_(denom)
        if eps:
            torch._foreach_add_(denom, eps)
        if beta:
            denom = [F.softplus(d, beta) for d in denom]
        values = [-lr * terms[i][1] / debias1[i] for i in rect]
        _add_cdiv_([params[i] for i in rect], [avgs[i] for i in rect], denom, values)
    if plain:
        alphas = [-lr / debias1[i] for i in plain]
        _add_scaled_([params[i] for i in plain], [avgs[i] for i in plain], alphas)


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
    torch._foreach_add_(denom, _each(denom, eps))
    denom = [torch.where(beta != 0, _softplus(d, beta), d) for d in denom]
    for p, avg, den, (rect, v), d1 in zip(params, avgs, denom, terms, debias1):
        direction = torch.where(rect, avg / den * v, avg)
        p.sub_(lr / d1 * direction)


def qhadam_step(
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
    """Multi-tensor `qhadam_step`."""
    grads = _grads(params)
    debias1 = _per_step(states, lambda t: debias(mom, 1 - mom, t))
    num = torch._foreach_div([s["grad_avg"] for s in states], debias1)
    torch._foreach_mul_(num, _each(num, nu_1))
    torch._foreach_add_(num, torch._foreach_mul(grads, _each(grads, 1 - nu_1)))
    denom = _debiased_sqr(states, sqr_mom)
    torch._foreach_mul_(denom, _each(denom, nu_2))
    g2 = torch._foreach_mul(grads, _each(grads, 1 - nu_2))
    torch._foreach_mul_(g2, grads)
    torch._foreach_add_(denom, g2)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, _each(denom, eps))
    _add_cdiv_(params, num, denom, -lr)


def larc_layer_lr(
    params: list[Tensor],
    states: list[dict],
    lr: Scalar,
    trust_coeff: Scalar,
    wd: Scalar,
    eps: Scalar,
    clip: bool = True,
    **hypers: Any,
) -> None:
    """Multi-tensor `larc_layer_lr`: all layer norms in two kernels, no host synchronisation."""
    p_norm = torch.stack(torch._foreach_norm(params))
    g_norm = torch.stack(torch._foreach_norm(_grads(params)))
    local_lr = lr * trust_coeff * p_norm / (g_norm + p_norm * wd + eps)
    if clip:
        local_lr = torch.clamp(local_lr, max=lr)
    for state, rate in zip(states, local_lr.unbind()):
        state["local_lr"] = rate


def larc_step(params: list[Tensor], states: list[dict], **hypers: Any) -> None:
    """Multi-tensor `larc_step`."""
    direction = _optional_list(params, states, "grad_avg")
    torch._foreach_sub_(params, torch._foreach_mul(direction, [s["local_lr"] for s in states]))


def lamb_step(
    params: list[Tensor],
    states: list[dict],
    lr: Scalar,
    mom: Scalar,
    sqr_mom: Scalar,
    eps: Scalar,
    **hypers: Any,
) -> None:
    """Multi-tensor `lamb_step`; stores each layer's `trust_ratio` like the per-parameter form."""
    debias1 = _per_step(states, lambda t: debias(mom, 1 - mom, t))
    update = torch._foreach_div([s["grad_avg"] for s in states], debias1)
    denom = _debiased_sqr(states, sqr_mom)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, _each(denom, eps))
    torch._foreach_div_(update, denom)
    # rms(x) = |x| / sqrt(numel): one norm kernel per list instead of pow/mean/sqrt per tensor.
    root_n = torch.tensor([math.sqrt(p.numel()) for p in params], device=params[0].device)
    r1 = torch.stack(torch._foreach_norm(params)) / root_n
    r2 = torch.stack(torch._foreach_norm(update)) / root_n
    q = torch.where((r1 == 0) | (r2 == 0), torch.ones_like(r1), (r1 / r2).clamp(max=10))
    ratios = q.unbind()
    torch._foreach_sub_(params, torch._foreach_mul(update, [lr * r for r in ratios]))
    for state, ratio in zip(states, ratios):
        state["trust_ratio"] = ratio


FOREACH_FORMS: dict[Callable, Callable] = {
    cb.sgd_step: sgd_step,
    cb.weight_decay: weight_decay,
    cb.l2_reg: l2_reg,
    cb.average_grad: average_grad,
    cb.average_sqr_grad: average_sqr_grad,
    cb.momentum_step: momentum_step,
    cb.rms_prop_step: rms_prop_step,
    cb.step_stat: step_stat,
    cb.adam_step: adam_step,
    cb.radam_step: radam_step,
    cb.qhadam_step: qhadam_step,
    cb.larc_layer_lr: larc_layer_lr,
    cb.larc_step: larc_step,
    cb.lamb_step: lamb_step,
}
"""The multi-tensor form of each built-in callback, keyed by the callback function itself."""
