"""`TerminateOnNaNCallback`: stop the fit before a non-finite loss reaches the weights."""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..loop.callback import Callback
from ..loop.events import CancelFitException
from .recorder import Recorder

__all__ = ["TerminateOnNaNCallback"]

log = logging.getLogger(__name__)


class TerminateOnNaNCallback(Callback):
    """Raise `CancelFitException` when the loss is infinite or NaN, before it does any harm.

    The reference checks in `after_batch`, after the optimizer step has already written the
    non-finite values into the weights and the optimizer state (and a checkpoint saved at the end
    of that epoch would keep them). Here a training loss is checked in `before_backward`, so the
    batch's backward and step never run: weights, optimizer state and every later checkpoint keep
    the last finite values. A validation loss is checked in `after_batch`, before the Recorder
    sees it. The stop is announced in one line (epoch, batch, value) on the
    `lightning_accel.callbacks.terminate` logger.
    """

    run_before = Recorder

    def before_backward(self) -> None:
        self._check("training")

    def after_batch(self) -> None:
        if not self.training:
            self._check("validation")

    def _check(self, phase: str) -> None:
        loss = self.learn.loss
        if loss is None:
            return
        loss = loss.detach()
        if bool(torch.isfinite(loss).all()):
            return
        log.warning(
            "TerminateOnNaNCallback: %s loss is %s at epoch %d, batch %d; stopping the fit "
            "before it reaches the weights",
            phase,
            _show(loss),
            self.learn.epoch,
            self.learn.iter,
        )
        raise CancelFitException


def _show(loss: Any) -> str:
    if loss.numel() == 1:
        return str(loss.item())
    bad = loss[~torch.isfinite(loss)]
    return f"{bad.flatten()[0].item()} ({bad.numel()} of {loss.numel()} values not finite)"
