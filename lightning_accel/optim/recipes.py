"""The classic optimizers as short lists of callbacks, with the reference signatures and defaults.

Every recipe returns an `AccelOptimizer` (`ranger` a `Lookahead` around one) and takes `impl=`.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any

from .callbacks import (
    adam_step,
    average_grad,
    average_sqr_grad,
    l2_reg,
    lamb_step,
    larc_layer_lr,
    larc_step,
    momentum_step,
    qhadam_step,
    radam_step,
    rms_prop_step,
    sgd_step,
    step_stat,
    weight_decay,
)
from .lookahead import Lookahead
from .optimizer import AccelOptimizer


def _decay(decouple_wd: bool) -> list:
    # Decoupled weight decay shrinks the weights; L2 adds wd * p to the gradient instead.
    return [weight_decay] if decouple_wd else [l2_reg]


def SGD(
    params: Iterable[Any],
    lr: float,
    mom: float = 0.0,
    wd: float = 0.0,
    decouple_wd: bool = True,
    impl: str = "auto",
) -> AccelOptimizer:
    """SGD, with momentum when `mom` > 0 (torch.optim.SGD's undampened form)."""
    cbs = _decay(decouple_wd)
    cbs += [average_grad, momentum_step] if mom != 0 else [sgd_step]
    return AccelOptimizer(params, cbs, impl=impl, lr=lr, mom=mom, wd=wd)


def RMSProp(
    params: Iterable[Any],
    lr: float,
    sqr_mom: float = 0.99,
    mom: float = 0.0,
    wd: float = 0.0,
    decouple_wd: bool = True,
    impl: str = "auto",
) -> AccelOptimizer:
    """RMSProp: divide the (averaged) gradient by the root of the averaged squared gradient."""
    cbs = _decay(decouple_wd)
    cbs += [average_sqr_grad] if mom == 0 else [average_grad, average_sqr_grad]
    cbs.append(rms_prop_step)
    return AccelOptimizer(params, cbs, impl=impl, lr=lr, mom=mom, sqr_mom=sqr_mom, wd=wd)


def _adam_stats() -> list:
    return [partial(average_grad, dampening=True), average_sqr_grad, step_stat]


def Adam(
    params: Iterable[Any],
    lr: float,
    mom: float = 0.9,
    sqr_mom: float = 0.99,
    eps: float = 1e-5,
    wd: float = 0.01,
    decouple_wd: bool = True,
    impl: str = "auto",
) -> AccelOptimizer:
    """Adam; with the default decoupled weight decay this is AdamW."""
    cbs = _decay(decouple_wd) + _adam_stats() + [adam_step]
    return AccelOptimizer(params, cbs, impl=impl, lr=lr, mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd)


def RAdam(
    params: Iterable[Any],
    lr: float,
    mom: float = 0.9,
    sqr_mom: float = 0.99,
    eps: float = 1e-5,
    wd: float = 0.0,
    beta: float = 0.0,
    decouple_wd: bool = True,
    impl: str = "auto",
) -> AccelOptimizer:
    """Rectified Adam (Liu et al. 2019); `beta` > 0 smooths the denominator with softplus."""
    cbs = _decay(decouple_wd) + _adam_stats() + [radam_step]
    return AccelOptimizer(
        params, cbs, impl=impl, lr=lr, mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd, beta=beta
    )


def QHAdam(
    params: Iterable[Any],
    lr: float,
    mom: float = 0.999,
    sqr_mom: float = 0.999,
    nu_1: float = 0.7,
    nu_2: float = 1.0,
    eps: float = 1e-8,
    wd: float = 0.0,
    decouple_wd: bool = True,
    impl: str = "auto",
) -> AccelOptimizer:
    """Quasi-hyperbolic Adam (Ma & Yarats 2018)."""
    cbs = _decay(decouple_wd) + _adam_stats() + [qhadam_step]
    return AccelOptimizer(
        params,
        cbs,
        impl=impl,
        lr=lr,
        nu_1=nu_1,
        nu_2=nu_2,
        mom=mom,
        sqr_mom=sqr_mom,
        eps=eps,
        wd=wd,
    )


def Larc(
    params: Iterable[Any],
    lr: float,
    mom: float = 0.9,
    clip: bool = True,
    trust_coeff: float = 0.02,
    eps: float = 1e-8,
    wd: float = 0.0,
    decouple_wd: bool = True,
    impl: str = "auto",
) -> AccelOptimizer:
    """LARC (`clip=True`) or LARS (`clip=False`): SGD with a layer-wise learning rate."""
    cbs = _decay(decouple_wd)
    if mom != 0:
        cbs.append(average_grad)
    cbs += [partial(larc_layer_lr, clip=clip), larc_step]
    return AccelOptimizer(
        params, cbs, impl=impl, lr=lr, mom=mom, trust_coeff=trust_coeff, eps=eps, wd=wd
    )


def Lamb(
    params: Iterable[Any],
    lr: float,
    mom: float = 0.9,
    sqr_mom: float = 0.99,
    eps: float = 1e-5,
    wd: float = 0.0,
    decouple_wd: bool = True,
    impl: str = "auto",
) -> AccelOptimizer:
    """LAMB (You et al. 2019): Adam's step scaled per layer by a trust ratio."""
    cbs = _decay(decouple_wd) + _adam_stats() + [lamb_step]
    return AccelOptimizer(params, cbs, impl=impl, lr=lr, mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd)


def ranger(
    params: Iterable[Any],
    lr: float,
    mom: float = 0.95,
    sqr_mom: float = 0.99,
    eps: float = 1e-6,
    wd: float = 0.01,
    beta: float = 0.0,
    decouple_wd: bool = True,
    impl: str = "auto",
) -> Lookahead:
    """Ranger: Lookahead around RAdam."""
    inner = RAdam(
        params,
        lr=lr,
        mom=mom,
        sqr_mom=sqr_mom,
        eps=eps,
        wd=wd,
        beta=beta,
        decouple_wd=decouple_wd,
        impl=impl,
    )
    return Lookahead(inner)


__all__ = ["SGD", "RMSProp", "Adam", "RAdam", "QHAdam", "Larc", "Lamb", "Lookahead", "ranger"]
