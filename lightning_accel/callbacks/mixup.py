"""`MixUp`: train on convex combinations of pairs of samples and of their losses."""

from __future__ import annotations

from typing import Any

import torch
from torch.distributions import Beta

from ..loop.callback import Callback

__all__ = ["MixUp"]


class MixUp(Callback):
    """MixUp (Zhang et al., 2017) as in the reference: mix inputs and losses, not targets.

    Each training batch is paired with a shuffled copy of itself; sample i is mixed with
    weight `lam_i ~ Beta(alpha, alpha)` folded to `lam_i >= 0.5`, so the original dominates:
    `x_i = lam_i * x_i + (1 - lam_i) * x_perm(i)`, and the loss is
    `mean_i(lam_i * loss(pred_i, y_i) + (1 - lam_i) * loss(pred_i, y_perm(i)))`.
    Validation is untouched. The loss function must accept `reduction="none"` (torch's
    functional losses) or have a `reduction` attribute (torch's loss modules).
    """

    run_valid = False

    def __init__(self, alpha: float = 0.4) -> None:
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha!r}")
        self.alpha = alpha
        self._distrib = Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))

    def before_fit(self) -> None:
        self._plain_loss = self.learn.loss_func
        self.learn.loss_func = self._mixed_loss

    def after_fit(self) -> None:
        self.learn.loss_func = self._plain_loss

    def before_batch(self) -> None:
        xb, yb = self.learn.xb, self.learn.yb
        bs = xb[0].shape[0]
        lam = self._distrib.sample((bs,)).to(xb[0].device)
        self.lam = torch.maximum(lam, 1 - lam)
        self.perm = torch.randperm(bs, device=xb[0].device)
        self.yb_other = tuple(y[self.perm] for y in yb)
        self.learn.xb = tuple(_mix(x, x[self.perm], self.lam) for x in xb)

    def _mixed_loss(self, pred: Any, *yb: Any) -> torch.Tensor:
        if not self.learn.training:
            return self._plain_loss(pred, *yb)
        own = _per_sample(self._plain_loss, pred, yb)
        other = _per_sample(self._plain_loss, pred, self.yb_other)
        return (self.lam * own + (1 - self.lam) * other).mean()


def _mix(x: torch.Tensor, other: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    if not torch.is_floating_point(x):
        return x  # token ids and the like cannot be mixed
    lam = lam.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return lam * x + (1 - lam) * other


def _per_sample(loss_func: Any, pred: Any, yb: tuple) -> torch.Tensor:
    """The loss of each sample: `reduction="none"`, then averaged over non-batch dimensions."""
    if hasattr(loss_func, "reduction"):
        saved = loss_func.reduction
        loss_func.reduction = "none"
        try:
            loss = loss_func(pred, *yb)
        finally:
            loss_func.reduction = saved
    else:
        loss = loss_func(pred, *yb, reduction="none")
    return loss.reshape(loss.shape[0], -1).mean(dim=1) if loss.ndim > 1 else loss
