"""Stopping a comparison on SIGINT or SIGTERM at the next batch boundary, finished work kept.

`stop_on_signals` turns both signals into a request; `StopBetweenBatches`, a Lightning callback,
raises `Interrupted` before the next training or validation batch once a request has arrived, so
the batch in progress finishes with all its callbacks (on every process at the same batch under
DDP). A second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import lightning.pytorch as pl

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Raised between two batches once a stop signal has arrived."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class StopRequest:
    """The handler of SIGINT and SIGTERM: it records the signal; the loop stops at a boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: the user does not want to wait
        self.signum = signum
        name = signal.Signals(signum).name
        # os.write, not print: a handler that prints while the main thread is printing fails.
        message = f"\n{name}: stopping at the end of this batch (Ctrl-C again stops at once)\n"
        with contextlib.suppress(OSError):
            os.write(2, message.encode())

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def raise_if_requested(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """SIGINT and SIGTERM become a `StopRequest` inside the block; the old handlers return after.

    Outside the main thread (where Python cannot set handlers) the request is never set.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, request)
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


class StopBetweenBatches(pl.Callback):
    """Ends the fit with `Interrupted` before the batch that follows a stop request."""

    def __init__(self, request: StopRequest) -> None:
        self.request = request

    def _check(self, trainer: pl.Trainer) -> None:
        requested = self.request.requested
        if trainer.world_size > 1:  # every process stops at the same batch, or none does
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested:
            raise Interrupted(self.request.signum or signal.SIGINT)

    # At the start of the next batch rather than the end of this one: Lightning runs callbacks'
    # batch-end hooks before the module's, so stopping there would cut the batch's own events.
    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._check(trainer)

    def on_validation_batch_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._check(trainer)
