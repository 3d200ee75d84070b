"""Which steps the monitor logs, and its writer's path for a non-torch SummaryWriter."""

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_accel.monitor.cadence import Cadence, spread
from lightning_accel.monitor.histograms import histogram
from lightning_accel.monitor.writer import (
    write_histograms,
    write_hparams_session,
    write_scalars,
)


@pytest.mark.parametrize(
    "points, total, expected",
    [
        (50, 4, {0, 1, 2, 3}),  # a short run: every step
        (3, 11, {0, 5, 10}),
        (2, 100, {0, 99}),
        (1, 7, {6}),
        (12, 0, set()),
    ],
)
def test_spread_takes_first_and_last_and_evenly_between(points, total, expected):
    assert spread(points, total) == expected


def test_spread_gives_exactly_the_points_asked_for_whatever_the_length():
    for total in (51, 66, 200, 10_001):
        steps = sorted(spread(50, total))
        assert len(steps) == 50 and steps[0] == 0 and steps[-1] == total - 1
        gaps = [b - a for a, b in zip(steps, steps[1:])]
        assert max(gaps) - min(gaps) <= 1


def test_cadence_joins_steps_and_an_interval():
    cadence = Cadence(steps=frozenset({0}), every=4)
    assert [s for s in range(10) if s in cadence] == [0, 3, 7]
    assert cadence.count(10) == 3
    assert 5 not in Cadence()


class Recording:
    """A writer that is not torch's SummaryWriter (as tensorboardX's is not)."""

    def __init__(self):
        self.histograms = []

    def add_histogram_raw(self, tag, *args):
        self.histograms.append((tag, args[-1]))


class OtherLogger(TensorBoardLogger):
    def __init__(self, tmp_path):
        super().__init__(tmp_path)
        self.logged, self._other = [], Recording()

    @property
    def experiment(self):
        return self._other

    def log_metrics(self, metrics, step=None):
        self.logged.append((dict(metrics), step))


def test_another_writer_gets_one_call_per_value(tmp_path):
    logger = OtherLogger(tmp_path)
    write_scalars(logger, {"a": 1.0, "b": 2.0}, 3)
    write_histograms(logger, {"grad/x": histogram([torch.ones(2)])}, 5)
    write_scalars(logger, {}, 4)
    assert logger.logged == [({"a": 1.0, "b": 2.0}, 3)]
    assert logger.experiment.histograms == [("grad/x", 5)]


def test_another_writer_gets_no_hparams_session_and_says_so(tmp_path):
    logger = OtherLogger(tmp_path)
    assert write_hparams_session(logger, {"lr": 0.1}, {"final/loss": 1.0}, 3) is False
    assert logger.logged == [] and logger.experiment.histograms == []
    assert write_hparams_session(TensorBoardLogger(tmp_path), {"lr": 0.1}, {"final/loss": 1.0}, 3)
