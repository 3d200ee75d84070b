"""How `compare` ends early: a setting it cannot run with, or a stop signal."""

from __future__ import annotations

import signal


class CompareError(ValueError):
    """A setting `compare` cannot run with; the message names the option and what it accepts."""


class CompareInterrupted(Exception):
    """SIGINT or SIGTERM stopped the comparison; finished recipes are saved, the message says
    which and how to resume (empty on DDP ranks other than zero), and the conventional exit
    status is 128 + the signal number."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum
