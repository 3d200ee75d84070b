"""The chapter's loop callbacks shipped with the package."""

from .gradient_clip import GradientClip
from .mixup import MixUp
from .recorder import Recorder
from .rnn import ModelResetter, RNNRegularizer
from .terminate import TerminateOnNaNCallback
from .train_eval import TrainEvalCallback

__all__: list[str] = [
    "Recorder",
    "TrainEvalCallback",
    "TerminateOnNaNCallback",
    "ModelResetter",
    "RNNRegularizer",
    "GradientClip",
    "MixUp",
]
