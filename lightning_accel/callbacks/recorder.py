"""`Recorder`: smooth loss, per-batch history, hyper-parameters, and the per-epoch table."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import torch

from ..loop.callback import Callback

__all__ = ["Recorder", "SmoothLoss"]


class SmoothLoss:
    """Exponential moving average of the loss, debiased: `avg / (1 - beta**count)`."""

    def __init__(self, beta: float = 0.98) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta!r}")
        self.beta = beta
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.avg = 0.0

    def update(self, loss: float) -> float:
        self.count += 1
        self.avg = self.beta * self.avg + (1 - self.beta) * loss
        return self.value

    @property
    def value(self) -> float:
        return self.avg / (1 - self.beta**self.count) if self.count else math.nan


class Recorder(Callback):
    """Records the training history and prints the chapter's per-epoch table.

    `losses`/`lrs` hold one value per training batch (smoothed loss, learning rate of the last
    parameter group), `iters` the iteration count at each epoch end, `values` one row per epoch
    (`train_loss, valid_loss, *metrics`), `hps` the per-iteration hyper-parameters a
    `ParamScheduler` fills. `learn.smooth_loss` is kept up to date.
    """

    order = 50  # after the callbacks that change the loss, so it records the final value

    def __init__(self, beta: float = 0.98, print_table: bool = True, log: bool = True) -> None:
        self._smooth = SmoothLoss(beta)
        self.print_table = print_table
        self.log_to_loggers = log
        self._reset_history()

    def _reset_history(self) -> None:
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.iters: list[int] = []
        self.values: list[list[float]] = []
        self.hps: dict[str, list[Any]] = {}
        self.metric_names: list[str] = []
        self._smooth.reset()
        self._printed_header = False
        self._in_epoch = False
        self._reset_epoch()

    def _reset_epoch(self) -> None:
        self._start = time.perf_counter()
        self._train_sum = self._train_n = 0.0
        self._valid_sum = self._valid_n = 0.0
        self._validated = False
        self._metrics_row: list[float] | None = None

    def set_hps(self, hps: Mapping[str, list[Any]]) -> None:
        """Keep the hyper-parameters a scheduler set, one value per training batch, for
        `plot_sched` (`ParamScheduler` hands them over at the end of each fit)."""
        self.hps = {name: list(values) for name, values in hps.items()}

    # ------------------------------------------------------------------ events
    def before_fit(self) -> None:
        self._reset_history()
        self.learn.smooth_loss = torch.tensor(math.nan)
        metrics = self.learn.metrics
        self.metric_names = list(metrics.keys()) if metrics is not None else []

    def before_epoch(self) -> None:
        self._reset_epoch()
        self._in_epoch = True

    def before_validate(self) -> None:
        if not self._in_epoch:
            self._reset_epoch()  # a validation outside a fit (`trainer.validate`): this run only
        self._validated = True

    def after_batch(self) -> None:
        loss = self.learn.loss
        if loss is None:
            return
        loss = loss.detach()
        value = loss.item() if loss.numel() == 1 else float(loss.float().mean())
        n = _batch_size(self.learn.xb)
        if self.learn.training:
            self._train_sum += value * n
            self._train_n += n
            smooth = self._smooth.update(value)
            self.learn.smooth_loss = torch.tensor(smooth)
            self.losses.append(smooth)
            opt = self.learn.opt
            if opt is not None:
                self.lrs.append(float(opt.param_groups[-1]["lr"]))
            self._log_step(smooth)
        else:
            self._valid_sum += value * n
            self._valid_n += n

    def _log_step(self, smooth: float) -> None:
        trainer = self.learn.trainer
        if not self.log_to_loggers or trainer is None or not trainer.loggers:
            return
        step = len(self.losses)
        if step % max(trainer.log_every_n_steps, 1) == 0 and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({"recorder/smooth_loss": smooth}, step=step)

    def after_epoch(self) -> None:
        self._in_epoch = False
        train_loss = self._train_sum / self._train_n if self._train_n else math.nan
        valid_loss = self._valid_sum / self._valid_n if self._valid_n else math.nan
        row = [train_loss, valid_loss, *self._metric_values()]
        self.values.append(row)
        self.iters.append(len(self.losses))
        elapsed = time.perf_counter() - self._start
        trainer = self.learn.trainer
        is_zero = trainer is None or trainer.is_global_zero
        if self.print_table and is_zero:
            self._print_row(self.learn.epoch, row, elapsed)
        if self.log_to_loggers and trainer is not None and is_zero:
            logged = {f"recorder/{k}": v for k, v in zip(self.table_names[1:-1], row)}
            for logger in trainer.loggers:
                logger.log_metrics(
                    {k: v for k, v in logged.items() if not math.isnan(v)},
                    step=self.learn.train_iter,
                )

    def after_cancel_validate(self) -> None:
        self._validated = False

    def after_validate(self) -> None:
        # Read what the module logged at the end of validation: computing the metrics here would
        # be a cross-rank collective that a rank which cancelled its epoch would never join.
        if not self._validated:
            return
        logged = self.learn.trainer.callback_metrics if self.learn.trainer is not None else {}
        self._metrics_row = [float(logged.get(n, math.nan)) for n in self.metric_names]

    def _metric_values(self) -> list[float]:
        row = self._metrics_row
        if not self._validated or row is None:
            return [math.nan] * len(self.metric_names)
        return row

    # ------------------------------------------------------------------ table and plots
    @property
    def table_names(self) -> list[str]:
        """The table's columns, as the chapter prints them."""
        return ["epoch", "train_loss", "valid_loss", *self.metric_names, "time"]

    def _print_row(self, epoch: int, row: list[float], elapsed: float) -> None:
        widths = [max(len(n), 8) for n in self.table_names]
        if not self._printed_header:
            print("  ".join(n.ljust(w) for n, w in zip(self.table_names, widths)))
            self._printed_header = True
        cells = [str(epoch), *(_fmt(v) for v in row), _fmt_time(elapsed)]
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)))

    def plot_loss(self, skip_start: int = 5, with_valid: bool = True) -> Any:
        """Smoothed training loss per iteration (and validation loss per epoch); a Figure."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        start = min(skip_start, max(len(self.losses) - 1, 0))
        ax.plot(range(start, len(self.losses)), self.losses[start:], label="train")
        if with_valid and self.values:
            points = [(i, r[1]) for i, r in zip(self.iters, self.values) if not math.isnan(r[1])]
            kept = [(i, v) for i, v in points if i >= start]
            if kept:
                ax.plot(*zip(*kept), label="valid")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.legend()
        return fig

    def plot_sched(self, keys: list[str] | None = None) -> Any:
        """The recorded hyper-parameters per iteration (`hps`, or the learning rate); a Figure."""
        import matplotlib.pyplot as plt

        series = dict(self.hps) if self.hps else {"lr": self.lrs}
        if keys is not None:
            missing = [k for k in keys if k not in series]
            if missing:
                raise KeyError(f"keys {missing} were not recorded; recorded: {sorted(series)}")
            series = {k: series[k] for k in keys}
        fig, axes = plt.subplots(1, max(len(series), 1), squeeze=False)
        for ax, (name, values) in zip(axes[0], series.items()):
            ax.plot([_scalar(v) for v in values])
            ax.set_title(name)
            ax.set_xlabel("iteration")
        return fig

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {
            "losses": list(self.losses),
            "lrs": list(self.lrs),
            "iters": list(self.iters),
            "values": [list(r) for r in self.values],
            "hps": {k: list(v) for k, v in self.hps.items()},
            "smooth": (self._smooth.count, self._smooth.avg),
            # The epoch in progress, for a checkpoint written in the middle of one.
            "epoch": {
                "train": (self._train_sum, self._train_n),
                "valid": (self._valid_sum, self._valid_n),
                "validated": self._validated,
                "metrics_row": self._metrics_row,
                "elapsed": time.perf_counter() - self._start,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses = list(state["losses"])
        self.lrs = list(state["lrs"])
        self.iters = list(state["iters"])
        self.values = [list(r) for r in state["values"]]
        self.hps = {k: list(v) for k, v in state["hps"].items()}
        self._smooth.count, self._smooth.avg = state["smooth"]
        if self._smooth.count:
            self.learn.smooth_loss = torch.tensor(self._smooth.value)
        epoch = state.get("epoch")  # absent in checkpoints written before mid-epoch resume
        if epoch is not None:
            self._train_sum, self._train_n = epoch["train"]
            self._valid_sum, self._valid_n = epoch["valid"]
            self._validated = epoch["validated"]
            row = epoch["metrics_row"]
            self._metrics_row = None if row is None else list(row)
            self._start = time.perf_counter() - epoch["elapsed"]


def _batch_size(xb: tuple) -> int:
    x = xb[0] if xb else None
    return int(x.shape[0]) if isinstance(x, torch.Tensor) and x.ndim > 0 else 1


def _scalar(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return v[-1]  # one value per parameter group: plot the last, as the reference does
    return float(v)


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.6f}"


def _fmt_time(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"
