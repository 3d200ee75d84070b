"""`TerminateOnNaNCallback`: stop the fit as soon as the loss is not finite."""

from __future__ import annotations

import torch

from ..loop.callback import Callback
from ..loop.events import CancelFitException
from .recorder import Recorder

__all__ = ["TerminateOnNaNCallback"]


class TerminateOnNaNCallback(Callback):
    """Raise `CancelFitException` when the loss is infinite or NaN.

    It runs before the `Recorder`, so the bad loss is never recorded.
    """

    run_before = Recorder

    def after_batch(self) -> None:
        loss = self.learn.loss
        if loss is not None and not bool(torch.isfinite(loss.detach()).all()):
            raise CancelFitException
