"""The optimizer callbacks: stat callbacks keep running statistics, step callbacks move weights.

Each is called as `cb(p, **{**state, **hypers})` and returns None or a dict of new state.
`cb.defaults` holds the default hyper-parameters it brings to an optimizer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def sgd_step(p: Tensor, lr: float, **kwargs) -> None:
    """Plain gradient descent: p -= lr * grad."""
    p.data.add_(p.grad.data, alpha=-lr)


def weight_decay(p: Tensor, lr: float, wd: float, do_wd: bool = True, **kwargs) -> None:
    """Decoupled weight decay: shrink p by a factor (1 - lr * wd)."""
    if do_wd and wd != 0:
        p.data.mul_(1 - lr * wd)


weight_decay.defaults = dict(wd=0.0)


def l2_reg(p: Tensor, wd: float, do_wd: bool = True, **kwargs) -> None:
    """L2 regularisation: add wd * p to the gradient."""
    if do_wd and wd != 0:
        p.grad.data.add_(p.data, alpha=wd)


l2_reg.defaults = dict(wd=0.0)


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


def momentum_step(p: Tensor, lr: float, grad_avg: Tensor, **kwargs) -> None:
    """Step along the averaged gradient."""
    p.data.add_(grad_avg, alpha=-lr)


def rms_prop_step(
    p: Tensor, lr: float, sqr_avg: Tensor, eps: float, grad_avg: Tensor | None = None, **kwargs
) -> None:
    """RMSProp: step along the (averaged) gradient divided by the root of sqr_avg."""
    denom = sqr_avg.sqrt().add_(eps)
    p.data.addcdiv_(grad_avg if grad_avg is not None else p.grad.data, denom, value=-lr)


rms_prop_step.defaults = dict(eps=1e-8)


def step_stat(p: Tensor, step: int = 0, **kwargs) -> dict:
    """Count the steps taken (needed for debiasing)."""
    return {"step": step + 1}


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
    debias2 = debias(sqr_mom, 1 - sqr_mom, step)
    r_inf = 2 / (1 - sqr_mom) - 1
    r = r_inf - 2 * step * sqr_mom**step / (1 - sqr_mom**step)
    if r > 5:
        v = math.sqrt(((r - 4) * (r - 2) * r_inf) / ((r_inf - 4) * (r_inf - 2) * r))
        denom = (sqr_avg / debias2).sqrt()
        if eps:
            denom += eps
        if beta:
            denom = F.softplus(denom, beta)
        p.data.addcdiv_(grad_avg, denom, value=-lr * v / debias1)
    else:
        p.data.add_(grad_avg, alpha=-lr / debias1)


radam_step.defaults = dict(eps=1e-5, beta=0.0)


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


def larc_layer_lr(
    p: Tensor, lr: float, trust_coeff: float, wd: float, eps: float, clip: bool = True, **kwargs
) -> dict:
    """LARC/LARS: a layer-wise rate, lr * trust_coeff * |p| / (|g| + wd |p| + eps), capped at lr
    when `clip` (LARC) and not when not (LARS)."""
    p_norm, g_norm = torch.linalg.vector_norm(p.data), torch.linalg.vector_norm(p.grad.data)
    local_lr = lr * trust_coeff * p_norm / (g_norm + p_norm * wd + eps)
    return {"local_lr": torch.clamp(local_lr, max=lr) if clip else local_lr}


larc_layer_lr.defaults = dict(trust_coeff=0.02, wd=0.0, eps=1e-8)


def larc_step(p: Tensor, local_lr: Tensor, grad_avg: Tensor | None = None, **kwargs) -> None:
    """Step along the (averaged) gradient with the layer-wise rate."""
    p.data.sub_(local_lr * (p.grad.data if grad_avg is None else grad_avg))


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
    """LAMB: the Adam step, rescaled per layer by the trust ratio rms(p) / rms(step), capped at 10.

    Returns the trust ratio as state (`trust_ratio`), so monitors can show it.
    """
    debias1 = debias(mom, 1 - mom, step)
    debias2 = debias(sqr_mom, 1 - sqr_mom, step)
    r1 = p.data.pow(2).mean().sqrt()
    update = (grad_avg / debias1) / ((sqr_avg / debias2).sqrt() + eps)
    r2 = update.pow(2).mean().sqrt()
    # 1 where either norm is zero; the tensor form avoids a host sync per parameter.
    q = torch.where((r1 == 0) | (r2 == 0), torch.ones_like(r1), (r1 / r2).clamp(max=10))
    p.data.sub_(lr * q * update)
    return {"trust_ratio": q}


lamb_step.defaults = dict(eps=1e-6, wd=0.0)


__all__ = [
    "sgd_step",
    "weight_decay",
    "l2_reg",
    "average_grad",
    "average_sqr_grad",
    "momentum_step",
    "rms_prop_step",
    "step_stat",
    "debias",
    "adam_step",
    "radam_step",
    "qhadam_step",
    "larc_layer_lr",
    "larc_step",
    "lamb_step",
]
