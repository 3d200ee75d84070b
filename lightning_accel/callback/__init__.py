"""Callback system: events, Cancel exceptions, Callback, the bridge, AccelModule, callbacks."""

from .bridge import CallbackBridge
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
from .gradient_clip import GradientClip
from .learner import Learner
from .mixup import MixUp
from .module import AccelModule
from .recorder import Recorder
from .rnn import ModelResetter, RNNRegularizer
from .terminate import TerminateOnNaNCallback
from .train_eval import TrainEvalCallback

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
    "CallbackBridge",
    "Learner",
    "AccelModule",
    "Recorder",
    "TrainEvalCallback",
    "TerminateOnNaNCallback",
    "ModelResetter",
    "RNNRegularizer",
    "GradientClip",
    "MixUp",
]
