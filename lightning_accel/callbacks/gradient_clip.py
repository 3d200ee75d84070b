"""`GradientClip`: clip the gradients' global norm before each optimizer step."""

from __future__ import annotations

from torch import nn

from ..loop.callback import Callback

__all__ = ["GradientClip"]


class GradientClip(Callback):
    """Scale the gradients so their global `norm_type`-norm is at most `max_norm`.

    It acts in `before_step`, not `after_backward`: under mixed precision the gradients are
    unscaled by then, and with gradient accumulation it clips the whole window's gradient.
    """

    def __init__(self, max_norm: float = 1.0, norm_type: float = 2.0) -> None:
        if not max_norm > 0:
            raise ValueError(f"max_norm must be positive, got {max_norm!r}")
        self.max_norm, self.norm_type = max_norm, norm_type

    def before_step(self) -> None:
        nn.utils.clip_grad_norm_(self.model.parameters(), self.max_norm, self.norm_type)
