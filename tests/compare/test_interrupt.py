"""SIGINT and SIGTERM become a stop request inside `stop_on_signals`, and only there."""

import os
import signal

import pytest

from lightning_accel.compare.interrupt import Interrupted, stop_on_signals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_becomes_a_request_and_the_old_handlers_come_back(signum):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with stop_on_signals() as stop:
        stop.raise_if_requested()  # nothing asked yet
        os.kill(os.getpid(), signum)
        assert stop.signum == signum
        with pytest.raises(Interrupted) as info:
            stop.raise_if_requested()
        assert info.value.signum == signum
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_second_ctrl_c_stops_at_once():
    with stop_on_signals():
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
