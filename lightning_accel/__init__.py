"""lightning-accel: the composable optimizer and callback loop of chapter 16, in Lightning."""

from . import callback, monitor, optim, train, vision
from .callback import *  # noqa: F403
from .monitor import *  # noqa: F403
from .optim import *  # noqa: F403
from .train import *  # noqa: F403
from .vision import *  # noqa: F403

__version__ = "0.1.0"

__all__ = [
    "__version__",
    *optim.__all__,
    *callback.__all__,
    *train.__all__,
    *vision.__all__,
    *monitor.__all__,
]
