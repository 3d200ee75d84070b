"""The chapter's training loop, without Lightning: events, Cancel exceptions, callbacks, the
nesting of the loop's parts and the learner state."""

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
from .nesting import Nesting
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
    "Nesting",
]
