"""The chapter's training loop, without Lightning: events, Cancel exceptions, callbacks, state."""

from .callback import Callback, sort_callbacks
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
from .state import Learner

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
    "Learner",
]
