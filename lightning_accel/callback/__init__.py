"""Callback system: events, Cancel exceptions, Callback, the bridge, AccelModule, callbacks."""

from .core import Callback, sort_callbacks
from .events import (
    CancelBackwardException,
    CancelBatchException,
    CancelEpochException,
    CancelException,
    CancelFitException,
    CancelStepException,
    CancelTrainException,
    CancelValidException,
    event,
)

__all__: list[str] = [
    "Callback",
    "sort_callbacks",
    "event",
    "CancelException",
    "CancelBatchException",
    "CancelBackwardException",
    "CancelStepException",
    "CancelTrainException",
    "CancelValidException",
    "CancelEpochException",
    "CancelFitException",
]
