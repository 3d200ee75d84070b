"""OptimizerStatsMonitor at its defaults, in real Trainers, read back from the event files."""

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, IterableDataset

from lightning_accel.monitor import OptimizerStatsMonitor
from lightning_accel.optim.recipes import Adam, Lamb

from .helpers import (
    TinyRegression,
    experiment_metrics,
    read_events,
    scalars,
    session_hparams,
    tiny_loader,
    trainer_kwargs,
)

LAYERS = ("body", "head")
# What the docs (docs/tensorboard.md) promise for a recipe that keeps both running averages.
ADAM_STATS = ("grad_norm", "grad_avg_norm", "sqr_avg_sqrt_mean", "update_ratio", "step_size")
HISTOGRAM_KINDS = ("weight", "grad", "update", "grad_avg", "sqr_avg_sqrt")
ADAM_HYPERS = ("lr", "mom", "sqr_mom", "eps", "wd")


def _fit(tmp_path, name, configure, **kwargs):
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, **kwargs),
        logger=TensorBoardLogger(tmp_path, name=name),
        callbacks=[OptimizerStatsMonitor()],
    )
    trainer.fit(TinyRegression(configure), tiny_loader())
    return trainer, read_events(trainer.logger.log_dir)


def _histogram_steps(acc, tag):
    return [event.step for event in acc.Histograms(tag)]


def test_a_four_batch_run_at_the_defaults_holds_every_promised_tag(tmp_path):
    trainer, acc = _fit(
        tmp_path, "short", lambda m: Adam(m.parameters(), lr=1e-2), limit_train_batches=4
    )
    steps = [0, 1, 2, 3]
    tags = set(acc.Tags()["scalars"])
    for name in ADAM_HYPERS:  # every step
        assert sorted(scalars(acc, f"hypers/{name}/group0")) == steps, name
    assert scalars(acc, "hypers/lr/group0")[0] == pytest.approx(1e-2)
    for stat in ADAM_STATS:  # a run shorter than 50 steps: every step, first and last included
        for layer in LAYERS:
            assert sorted(scalars(acc, f"{stat}/{layer}")) == steps, (stat, layer)
    assert not any(t.startswith("trust_ratio/") for t in tags)  # Adam keeps no trust ratio
    for kind in HISTOGRAM_KINDS:
        for layer in LAYERS:
            assert _histogram_steps(acc, f"{kind}/{layer}") == steps, (kind, layer)
    # The weights after the last step, binned: every element counted, the extremes exact.
    head = torch.cat([p.detach().flatten() for p in trainer.lightning_module.head.parameters()])
    last = acc.Histograms("weight/head")[-1].histogram_value
    assert last.num == head.numel() == 9
    assert (last.min, last.max) == pytest.approx((float(head.min()), float(head.max())))
    assert sum(last.bucket) == 9
    # The HParams tab: the run's settings and its final metrics.
    assert session_hparams(acc)["optimizer"].endswith("adam_step")
    assert experiment_metrics(acc) == ["final/train_loss"]
    assert list(scalars(acc, "final/train_loss")) == [4]


def test_lamb_adds_the_trust_ratio_at_the_defaults(tmp_path):
    _, acc = _fit(tmp_path, "lamb", lambda m: Lamb(m.parameters(), lr=1e-2), limit_train_batches=4)
    for layer in LAYERS:
        assert sorted(scalars(acc, f"trust_ratio/{layer}")) == [0, 1, 2, 3]


def test_a_long_run_gets_about_50_points_and_12_histograms_spread_over_it(tmp_path):
    _, acc = _fit(tmp_path, "long", None, max_epochs=15)  # 8 steps an epoch: 120 steps
    total = 120
    hypers = scalars(acc, "hypers/lr/group0")
    assert sorted(hypers) == list(range(total))
    stats = sorted(scalars(acc, "grad_norm/body"))
    hists = _histogram_steps(acc, "grad/body")
    # Histograms: the first step, the last, and 10 in between, about evenly apart.
    assert len(hists) == 12 and hists[0] == 0 and hists[-1] == total - 1
    gaps = [b - a for a, b in zip(hists, hists[1:])]
    assert min(gaps) >= (total - 1) // 11 and max(gaps) <= (total - 1) // 11 + 1
    # Statistics: 50 points about evenly apart, plus those of the histogram steps.
    assert stats[0] == 0 and stats[-1] == total - 1
    assert set(hists) <= set(stats)
    assert 50 <= len(stats) <= 50 + 12
    assert max(b - a for a, b in zip(stats, stats[1:])) <= -(-(total - 1) // 49)


def test_explicit_intervals_override_the_spread(tmp_path):
    monitor = OptimizerStatsMonitor(
        points=3, log_every_n_steps=5, histogram_every_n_steps=8, hypers_every_n_steps=4
    )
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, max_epochs=2),
        logger=TensorBoardLogger(tmp_path, name="explicit"),
        callbacks=[monitor],
    )
    trainer.fit(TinyRegression(), tiny_loader())
    acc = read_events(trainer.logger.log_dir)
    assert sorted(scalars(acc, "hypers/lr/group0")) == [0, 4, 8, 12]
    assert _histogram_steps(acc, "grad/body") == [7, 15]  # the 8th and 16th step
    assert sorted(scalars(acc, "grad_norm/body")) == [4, 7, 9, 14, 15]  # and histogram steps


class Unsized(IterableDataset):
    """A stream without a length: Lightning cannot tell how many steps an epoch has."""

    def __iter__(self):
        gen = torch.Generator().manual_seed(0)
        for _ in range(10):
            x = torch.randn(4, 4, generator=gen)
            yield x, x.sum(1, keepdim=True)


def test_a_run_of_unknown_length_falls_back_to_the_trainers_interval(tmp_path):
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, log_every_n_steps=3),
        logger=TensorBoardLogger(tmp_path, name="unsized"),
        callbacks=[OptimizerStatsMonitor(log_hparams=False)],
    )
    trainer.fit(TinyRegression(), DataLoader(Unsized(), batch_size=None))
    # Lightning's estimate for an unsized loader without max_steps is max_steps itself, -1.
    assert trainer.estimated_stepping_batches == -1
    acc = read_events(trainer.logger.log_dir)
    assert sorted(scalars(acc, "hypers/lr/group0")) == list(range(10))
    # The first step, then every 3rd; histograms at the first step and every 30th.
    assert sorted(scalars(acc, "grad_norm/head")) == [0, 2, 5, 8]
    assert _histogram_steps(acc, "weight/head") == [0]


def test_histograms_zero_turns_them_off_and_keeps_the_statistics(tmp_path):
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, limit_train_batches=3),
        logger=TensorBoardLogger(tmp_path, name="nohist"),
        callbacks=[OptimizerStatsMonitor(histograms=0, points=2, log_hparams=False)],
    )
    trainer.fit(TinyRegression(), tiny_loader())
    acc = read_events(trainer.logger.log_dir)
    assert acc.Tags()["histograms"] == []
    assert sorted(scalars(acc, "update_ratio/body")) == [0, 2]  # 2 points: first and last
