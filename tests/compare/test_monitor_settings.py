"""How compare configures the optimizer monitor of each recipe."""

import pytest

from lightning_accel.compare.errors import CompareError
from lightning_accel.compare.recipes import RECIPES
from lightning_accel.compare.runner import _monitor
from lightning_accel.compare.settings import CompareConfig
from lightning_accel.monitor.cadence import Cadence


class FakeTrainer:
    """What the monitor reads from a trainer to place its steps: a 66-step run, the default
    compare's length (3 epochs of 22 batches)."""

    estimated_stepping_batches = 66
    log_every_n_steps = 1


def _steps(cadence: Cadence) -> list[int]:
    return [s for s in range(66) if s in cadence]


def test_by_default_each_recipe_gets_the_monitors_own_defaults():
    monitor = _monitor(RECIPES["adam"], CompareConfig())
    stats, hists = monitor.cadences(FakeTrainer())
    assert len(_steps(stats)) == 50 and _steps(stats)[0] == 0 and _steps(stats)[-1] == 65
    assert len(_steps(hists)) == 12 and _steps(hists)[0] == 0 and _steps(hists)[-1] == 65
    # Histogram steps get statistics too: 56 steps in all (docs/tensorboard.md says so).
    assert len(set(_steps(stats)) | set(_steps(hists))) == 56
    assert monitor.hypers_every_n_steps == 1
    assert monitor.hparam_metrics == ("valid_loss", "accuracy")
    assert monitor.hparams == {"recipe": "adam", "lr": 3e-3, "data": "digits", "seed": 0}


def test_monitor_every_sets_an_interval_and_histograms_ten_times_rarer():
    stats, hists = _monitor(RECIPES["sgd"], CompareConfig(monitor_every=6)).cadences(FakeTrainer())
    assert _steps(stats) == [5, 11, 17, 23, 29, 35, 41, 47, 53, 59, 65]
    assert _steps(hists) == [59]


@pytest.mark.parametrize("value", [-1, -10])
def test_a_negative_monitor_every_is_refused(value, tmp_path):
    message = f"--monitor-every must be 0 \\(off\\) or more, got {value}"
    with pytest.raises(CompareError, match=message):
        CompareConfig(monitor_every=value, logdir=tmp_path / "runs").validate()
