"""lightning-accel: the composable optimizer and callback loop of chapter 16, in Lightning."""

from . import callbacks, lightning, loop, monitor, optim, schedule, vision
from .callbacks import *  # noqa: F403
from .lightning import *  # noqa: F403
from .loop import *  # noqa: F403
from .module import AccelModule
from .monitor import *  # noqa: F403
from .optim import *  # noqa: F403
from .schedule import *  # noqa: F403
from .vision import *  # noqa: F403

__version__ = "0.1.0"

__all__ = [
    "__version__",
    *optim.__all__,
    *loop.__all__,
    *lightning.__all__,
    "AccelModule",
    *callbacks.__all__,
    *schedule.__all__,
    *vision.__all__,
    *monitor.__all__,
]
