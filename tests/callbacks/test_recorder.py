"""Recorder: smooth loss, history, the per-epoch table, logging, plots; resuming a fit."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torchmetrics.regression import MeanAbsoluteError

from lightning_accel import AccelModule, Callback, Recorder
from lightning_accel.callbacks.recorder import SmoothLoss
from lightning_accel.optim.recipes import SGD

from ..tiny import loaders
from ..tiny import trainer as make_trainer

LR = 0.05


class Losses(Callback):
    """The raw loss of every batch, by phase, as the loop computed it."""

    def __init__(self):
        self.train, self.valid = [], []

    def after_loss(self):
        (self.train if self.training else self.valid).append(float(self.loss.detach()))


def test_smooth_loss_is_the_debiased_exponential_average():
    smooth = SmoothLoss(0.98)
    values = [3.0, 1.0, 4.0, 1.0, 5.0]
    avg = 0.0
    for i, v in enumerate(values, start=1):
        avg = 0.98 * avg + 0.02 * v
        assert smooth.update(v) == pytest.approx(avg / (1 - 0.98**i))
    assert math.isnan(SmoothLoss().value)
    with pytest.raises(ValueError, match="beta must be in"):
        SmoothLoss(1.0)


def test_recorder_history_and_table(tmp_path, capsys):
    losses = Losses()
    module = AccelModule(
        nn.Linear(3, 1), nn.functional.mse_loss, SGD, lr=LR, cbs=[losses],
        metrics=[MeanAbsoluteError()],
    )  # fmt: skip
    logger = CSVLogger(tmp_path, name="csv")
    train_dl, valid_dl = loaders(3, 2)
    make_trainer(tmp_path, max_epochs=2, logger=logger).fit(module, train_dl, valid_dl)
    rec: Recorder = module.bridge.learn.recorder

    # Smooth loss, by hand, over the 6 training batches.
    avg, want = 0.0, []
    for i, v in enumerate(losses.train, start=1):
        avg = 0.98 * avg + 0.02 * v
        want.append(avg / (1 - 0.98**i))
    assert rec.losses == pytest.approx(want)
    assert float(module.bridge.learn.smooth_loss) == pytest.approx(want[-1])
    assert rec.lrs == [LR] * 6 and rec.iters == [3, 6]

    # One row per epoch: mean train loss, mean valid loss, the metric on the validation set.
    for epoch, row in enumerate(rec.values):
        train_loss, valid_loss, mae = row
        assert train_loss == pytest.approx(sum(losses.train[3 * epoch : 3 * epoch + 3]) / 3)
        assert valid_loss == pytest.approx(sum(losses.valid[2 * epoch : 2 * epoch + 2]) / 2)
    # The metric of the last epoch, recomputed by hand with the final weights.
    with torch.no_grad():
        errs = [(module.model(x) - y).abs() for x, y in valid_dl]
    assert rec.values[-1][2] == pytest.approx(float(torch.cat(errs).mean()), rel=1e-5)

    out = capsys.readouterr().out.splitlines()
    header = [line for line in out if line.startswith("epoch")]
    assert header and header[0].split() == [
        "epoch", "train_loss", "valid_loss", "mean_absolute_error", "time",
    ]  # fmt: skip
    rows = [line.split() for line in out if line[:1].isdigit()]
    assert [r[0] for r in rows] == ["0", "1"]
    assert float(rows[1][1]) == pytest.approx(rec.values[1][0], abs=1e-6)

    logger.save()
    csv = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text()
    assert "recorder/train_loss" in csv and "recorder/mean_absolute_error" in csv


def test_plots_are_png(tmp_path):
    module = AccelModule(nn.Linear(3, 1), nn.functional.mse_loss, SGD, lr=LR)
    make_trainer(tmp_path, max_epochs=2).fit(module, *loaders(4, 1))
    rec = module.bridge.learn.recorder
    rec.hps["lr"] = [[LR]] * len(rec.losses)
    rec.hps["mom"] = [0.9] * len(rec.losses)
    for name, fig in [("loss", rec.plot_loss(skip_start=1)), ("sched", rec.plot_sched())]:
        path = tmp_path / f"{name}.png"
        fig.savefig(path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(rec.plot_sched().axes) == 2
    with pytest.raises(KeyError, match="were not recorded"):
        rec.plot_sched(keys=["wd"])


def _fit(tmp_path, max_epochs, ckpt_path=None):
    torch.manual_seed(0)
    module = AccelModule(nn.Linear(3, 1), nn.functional.mse_loss, lr=0.01)  # AccelOptimizer Adam
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    trainer = make_trainer(
        tmp_path, max_epochs=max_epochs, callbacks=[ckpt], enable_checkpointing=True
    )
    trainer.fit(module, *loaders(3, 2), ckpt_path=ckpt_path)
    return module, trainer


def test_resume_after_epoch_k_equals_an_uninterrupted_fit(tmp_path):
    full, full_trainer = _fit(tmp_path / "full", 4)
    ckpt = tmp_path / "full" / "ckpt" / "epoch=1-step=6.ckpt"
    assert ckpt.exists()
    resumed, _ = _fit(tmp_path / "resumed", 4, ckpt_path=ckpt)

    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b)
    state_a, state_b = full.opt.state_dict()["state"], resumed.opt.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        for name in ("grad_avg", "sqr_avg", "step"):
            torch.testing.assert_close(
                torch.as_tensor(state_a[key][name]), torch.as_tensor(state_b[key][name])
            )
    rec_a, rec_b = full.bridge.learn.recorder, resumed.bridge.learn.recorder
    assert rec_b.losses == pytest.approx(rec_a.losses)
    assert rec_b.lrs == rec_a.lrs and rec_b.iters == rec_a.iters
    assert sum(rec_b.values, []) == pytest.approx(sum(rec_a.values, []))
    assert len(rec_a.values) == 4
    learn_a, learn_b = full.bridge.learn, resumed.bridge.learn
    assert learn_b.train_iter == learn_a.train_iter == 12
    assert learn_b.pct_train == pytest.approx(learn_a.pct_train)
