"""`EpochTable`: the chapter's per-epoch table, recorded from inside the callback bridge."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from ..loop.callback import Callback
from .report import EpochRow


class EpochTable(Callback):
    """Records the chapter's per-epoch table and sends the same figures to the logger.

    Under `chapter/` in TensorBoard: `train_loss` and `lr` per step, `valid_loss` and `accuracy`
    per epoch (beside what the module and its Recorder log themselves).

    `train_loss` is the reference's smoothed loss (debiased moving average, beta 0.98, over the
    whole fit) at the end of the epoch; `valid_loss` and `accuracy` are averages over the whole
    validation set (summed across processes under DDP); `time` is the wall-clock time of training
    and validation. `on_row` is called with each row as its epoch ends (progress for a log file).
    """

    order = 50  # after the callbacks that compute the loss and change the learning rate

    def __init__(
        self, beta: float = 0.98, on_row: Callable[[EpochRow], None] | None = None
    ) -> None:
        self.beta, self.on_row = beta, on_row
        self.rows: list[EpochRow] = []
        self.step_losses: list[float] = []
        self._avg, self._count, self._start = 0.0, 0, 0.0
        self._val = torch.zeros(3, dtype=torch.float64)

    def before_fit(self) -> None:
        self.rows, self.step_losses = [], []
        self._avg, self._count = 0.0, 0

    def before_epoch(self) -> None:
        self._start = time.perf_counter()
        self._val = torch.zeros(3, dtype=torch.float64)

    def after_batch(self) -> None:
        loss = self.learn.loss
        if loss is None:
            return
        if self.learn.training:
            self._count += 1
            self._avg = self.beta * self._avg + (1 - self.beta) * float(loss.detach())
            smooth = self._avg / (1 - self.beta**self._count)
            self.step_losses.append(smooth)
            self._log({"chapter/train_loss": smooth, "chapter/lr": self._lr()})
        else:
            target = self.learn.yb[0]
            n = target.shape[0]
            correct = (self.learn.pred.argmax(-1) == target).sum().item()
            self._val += torch.tensor([float(loss.detach()) * n, correct, n], dtype=torch.float64)

    def after_epoch(self) -> None:
        totals = self._val
        trainer = self.learn.trainer
        if trainer is not None and trainer.world_size > 1:
            totals = trainer.strategy.reduce(
                totals.to(trainer.strategy.root_device), reduce_op="sum"
            ).cpu()
        loss_sum, correct, n = totals.tolist()
        valid_loss = loss_sum / n if n else math.nan
        accuracy = correct / n if n else math.nan
        train_loss = self.step_losses[-1] if self.step_losses else math.nan
        seconds = time.perf_counter() - self._start
        row = EpochRow(self.learn.epoch, train_loss, valid_loss, accuracy, seconds)
        self.rows.append(row)
        self._log({"chapter/valid_loss": valid_loss, "chapter/accuracy": accuracy})
        if self.on_row is not None:
            self.on_row(row)

    def _lr(self) -> float:
        opt = self.learn.opt
        return float(opt.param_groups[-1]["lr"]) if opt is not None else math.nan

    def _log(self, metrics: dict[str, float]) -> None:
        trainer = self.learn.trainer
        if trainer is not None and trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=trainer.global_step)
