"""The classic optimizers as short lists of callbacks, with the reference signatures and defaults.

Each recipe is a subclass of `AccelOptimizer` (so `isinstance(opt, Adam)` holds, and
LightningCLI's `--optimizer.help lightning_accel.Adam` lists its typed arguments with their
defaults); `ranger` returns a `Lookahead` around a `RAdam`. Every recipe takes `impl=`, and its
hyper-parameters are range-checked on construction and on every `set_hyper`.
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
from .validation import check_flag, check_hyper


def _decay(decouple_wd: bool) -> list:
    # Decoupled weight decay shrinks the weights; L2 adds wd * p to the gradient instead.
    check_flag("decouple_wd", decouple_wd)
    return [weight_decay] if decouple_wd else [l2_reg]


def _adam_stats() -> list:
    return [partial(average_grad, dampening=True), average_sqr_grad, step_stat]


class SGD(AccelOptimizer):
    """SGD, with momentum when `mom` > 0 (torch.optim.SGD's undampened form).

    Complex parameters are accepted: every step here is linear, so they train as in torch's SGD.

    Args:
        params: the parameters to train: tensors, lists of tensors (one group each) or dicts.
        lr: learning rate, >= 0.
        mom: momentum, in [0, 1); 0 runs plain SGD.
        wd: weight decay, >= 0.
        decouple_wd: shrink the weights (True) or add `wd * p` to the gradient (False, L2).
        impl: how the step executes: "auto", "composed", "foreach", "per_param" or "compiled".
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        mom: float = 0.0,
        wd: float = 0.0,
        decouple_wd: bool = True,
        impl: str = "auto",
    ) -> None:
        check_hyper("mom", mom)  # it chooses the pipeline, so before anything else
        cbs = _decay(decouple_wd)
        cbs += [average_grad, momentum_step] if mom != 0 else [sgd_step]
        super().__init__(params, cbs, impl=impl, allow_complex=True, lr=lr, mom=mom, wd=wd)


class RMSProp(AccelOptimizer):
    """RMSProp: divide the (averaged) gradient by the root of the averaged squared gradient.

    Args:
        params: the parameters to train: tensors, lists of tensors (one group each) or dicts.
        lr: learning rate, >= 0.
        sqr_mom: decay of the squared-gradient average, in [0, 1).
        mom: momentum of the gradient average, in [0, 1); 0 steps along the gradient itself.
        wd: weight decay, >= 0.
        decouple_wd: shrink the weights (True) or add `wd * p` to the gradient (False, L2).
        impl: how the step executes: "auto", "composed", "foreach", "per_param" or "compiled".
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        sqr_mom: float = 0.99,
        mom: float = 0.0,
        wd: float = 0.0,
        decouple_wd: bool = True,
        impl: str = "auto",
    ) -> None:
        check_hyper("mom", mom)  # it chooses the pipeline, so before anything else
        cbs = _decay(decouple_wd)
        cbs += [average_sqr_grad] if mom == 0 else [average_grad, average_sqr_grad]
        cbs.append(rms_prop_step)
        super().__init__(params, cbs, impl=impl, lr=lr, mom=mom, sqr_mom=sqr_mom, wd=wd)


class Adam(AccelOptimizer):
    """Adam; with the default decoupled weight decay this is AdamW.

    Args:
        params: the parameters to train: tensors, lists of tensors (one group each) or dicts.
        lr: learning rate, >= 0.
        mom: decay of the gradient average (beta1), in [0, 1).
        sqr_mom: decay of the squared-gradient average (beta2), in [0, 1).
        eps: added to the denominator, >= 0.
        wd: weight decay, >= 0.
        decouple_wd: shrink the weights (True, AdamW) or add `wd * p` to the gradient (False).
        impl: how the step executes: "auto", "composed", "foreach", "per_param" or "compiled".
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        mom: float = 0.9,
        sqr_mom: float = 0.99,
        eps: float = 1e-5,
        wd: float = 0.01,
        decouple_wd: bool = True,
        impl: str = "auto",
    ) -> None:
        cbs = _decay(decouple_wd) + _adam_stats() + [adam_step]
        super().__init__(params, cbs, impl=impl, lr=lr, mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd)


class RAdam(AccelOptimizer):
    """Rectified Adam (Liu et al. 2019); `beta` > 0 smooths the denominator with softplus.

    Args:
        params: the parameters to train: tensors, lists of tensors (one group each) or dicts.
        lr: learning rate, >= 0.
        mom: decay of the gradient average (beta1), in [0, 1).
        sqr_mom: decay of the squared-gradient average (beta2), in [0, 1).
        eps: added to the denominator, >= 0.
        wd: weight decay, >= 0.
        beta: softplus sharpness for the denominator, >= 0; 0 turns softplus off.
        decouple_wd: shrink the weights (True) or add `wd * p` to the gradient (False, L2).
        impl: how the step executes: "auto", "composed", "foreach", "per_param" or "compiled".
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        mom: float = 0.9,
        sqr_mom: float = 0.99,
        eps: float = 1e-5,
        wd: float = 0.0,
        beta: float = 0.0,
        decouple_wd: bool = True,
        impl: str = "auto",
    ) -> None:
        cbs = _decay(decouple_wd) + _adam_stats() + [radam_step]
        super().__init__(
            params, cbs, impl=impl, lr=lr, mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd, beta=beta
        )


class QHAdam(AccelOptimizer):
    """Quasi-hyperbolic Adam (Ma & Yarats 2018).

    Args:
        params: the parameters to train: tensors, lists of tensors (one group each) or dicts.
        lr: learning rate, >= 0.
        mom: decay of the gradient average (beta1), in [0, 1).
        sqr_mom: decay of the squared-gradient average (beta2), in [0, 1).
        nu_1: weight of the gradient average against the gradient, in [0, 1].
        nu_2: weight of the squared-gradient average against the squared gradient, in [0, 1].
        eps: added to the denominator, >= 0.
        wd: weight decay, >= 0.
        decouple_wd: shrink the weights (True) or add `wd * p` to the gradient (False, L2).
        impl: how the step executes: "auto", "composed", "foreach", "per_param" or "compiled".
    """

    def __init__(
        self,
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
    ) -> None:
        cbs = _decay(decouple_wd) + _adam_stats() + [qhadam_step]
        super().__init__(
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


class Larc(AccelOptimizer):
    """LARC (`clip=True`) or LARS (`clip=False`): SGD with a layer-wise learning rate.

    Args:
        params: the parameters to train: tensors, lists of tensors (one group each) or dicts.
        lr: learning rate, >= 0.
        mom: momentum, in [0, 1); 0 steps along the gradient itself.
        clip: cap the layer-wise rate at `lr` (LARC) or not (LARS).
        trust_coeff: the trust coefficient, > 0.
        eps: added to the denominator of the trust ratio, >= 0.
        wd: weight decay, >= 0.
        decouple_wd: shrink the weights (True) or add `wd * p` to the gradient (False, L2).
        impl: how the step executes: "auto", "composed", "foreach", "per_param" or "compiled".
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        mom: float = 0.9,
        clip: bool = True,
        trust_coeff: float = 0.02,
        eps: float = 1e-8,
        wd: float = 0.0,
        decouple_wd: bool = True,
        impl: str = "auto",
    ) -> None:
        check_flag("clip", clip)
        check_hyper("mom", mom)  # it chooses the pipeline, so before anything else
        cbs = _decay(decouple_wd)
        if mom != 0:
            cbs.append(average_grad)
        cbs += [partial(larc_layer_lr, clip=clip), larc_step]
        super().__init__(
            params, cbs, impl=impl, lr=lr, mom=mom, trust_coeff=trust_coeff, eps=eps, wd=wd
        )


class Lamb(AccelOptimizer):
    """LAMB (You et al. 2019): Adam's step scaled per layer by a trust ratio.

    Args:
        params: the parameters to train: tensors, lists of tensors (one group each) or dicts.
        lr: learning rate, >= 0.
        mom: decay of the gradient average (beta1), in [0, 1).
        sqr_mom: decay of the squared-gradient average (beta2), in [0, 1).
        eps: added to the denominator, >= 0.
        wd: weight decay, >= 0.
        decouple_wd: shrink the weights (True) or add `wd * p` to the gradient (False, L2).
        impl: how the step executes: "auto", "composed", "foreach", "per_param" or "compiled".
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        mom: float = 0.9,
        sqr_mom: float = 0.99,
        eps: float = 1e-5,
        wd: float = 0.0,
        decouple_wd: bool = True,
        impl: str = "auto",
    ) -> None:
        cbs = _decay(decouple_wd) + _adam_stats() + [lamb_step]
        super().__init__(params, cbs, impl=impl, lr=lr, mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd)


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
    """Ranger: Lookahead around RAdam (arguments as `RAdam`'s)."""
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
