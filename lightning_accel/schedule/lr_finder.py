"""The learning-rate finder: a short mock training with an exponentially growing learning rate.

`lr_find` runs it on its own `Trainer`, puts the weights and optimizer state back exactly as
they were (also when the run raises), and returns suggestions. `LRFinder` is the callback doing
the work, usable in a user's own `Trainer`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import warnings
from collections import namedtuple
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks.progress import ProgressBar
from matplotlib.figure import Figure

from ..lightning.known_warnings import quiet_known_warnings
from ..module import AccelModule
from .functions import SchedExp
from .hypers import get_hyper, set_hyper
from .lr_find_progress import LRFindProgress
from .suggestions import valley

__all__ = ["LRFinder", "lr_find", "plot_lr_find"]

SuggestFunc = Callable[..., tuple[float, tuple[float, float]]]
SKIP_END = 5  # points left out at the end of the curve, for suggestions and plot (the reference)


def _check_lr_range(start_lr: Any, end_lr: Any) -> None:
    starts = np.asarray(start_lr, dtype=np.float64).reshape(-1)
    ends = np.asarray(end_lr, dtype=np.float64).reshape(-1)
    if not (np.all(np.isfinite(starts)) and np.all(starts > 0)):
        raise ValueError(f"start_lr must be positive, got {start_lr!r}")
    if not np.all(np.isfinite(ends)):
        raise ValueError(f"end_lr must be finite, got {end_lr!r}")
    if not np.all(starts < ends):
        raise ValueError(f"start_lr must be smaller than end_lr, got {start_lr!r} >= {end_lr!r}")


class LRFinder(pl.Callback):
    """Grow the learning rate exponentially from `start_lr` to `end_lr` over `num_it` optimizer
    steps, recording the smoothed loss; stop early when it turns non-finite or, with `stop_div`,
    exceeds 4x its minimum. Weights and optimizer state are restored when the fit ends.

    `lrs` and `losses` (smoothed, as the reference: debiased moving average, `beta=0.98`) hold
    the curve; `raw_losses` the batch losses.
    """

    def __init__(
        self,
        start_lr: float | Sequence[float] = 1e-7,
        end_lr: float | Sequence[float] = 10.0,
        num_it: int = 100,
        stop_div: bool = True,
        beta: float = 0.98,
    ) -> None:
        _check_lr_range(start_lr, end_lr)
        if isinstance(num_it, bool) or not isinstance(num_it, int) or num_it < 1:
            raise ValueError(f"num_it must be a positive integer, got {num_it!r}")
        if not 0 <= beta < 1:
            raise ValueError(f"beta must be in [0, 1), got {beta!r}")
        self.sched = SchedExp(start_lr, end_lr)
        self.num_it, self.stop_div, self.beta = num_it, stop_div, beta
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.raw_losses: list[float] = []
        # Why the sweep ended before num_it steps (None when it ran them all), for the display.
        self.stop_reason: str | None = None
        self._saved: dict[str, Any] | None = None

    # -- snapshot and restore -------------------------------------------------------------

    def _snapshot(self, module: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
        grads = {
            p: None if p.grad is None else p.grad.detach().clone() for p in module.parameters()
        }
        state = {p: _clone_state(s) for p, s in opt.state.items()}
        groups = [
            {k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in opt.param_groups
        ]
        # Wrappers such as Lookahead keep more than `state` and `param_groups` (slow weights):
        # their own state_dict carries it, and is loaded back after the in-place restore.
        full = opt.state_dict()
        extra = any(k not in ("state", "param_groups") for k in full)
        self._saved = {
            "full": copy.deepcopy(full) if extra else None,
            "module": module,
            "weights": weights,
            "grads": grads,
            "opt": opt,
            "state": state,
            "groups": groups,
        }

    @torch.no_grad()
    def restore(self) -> None:
        """Put weights, gradients and optimizer state back as they were at the start of the fit.

        Tensors are restored in place, so references to parameters and state stay valid."""
        saved, self._saved = self._saved, None
        if saved is None:
            return
        for k, v in saved["module"].state_dict().items():
            v.copy_(saved["weights"][k])
        for p, g in saved["grads"].items():
            p.grad = g
        opt = saved["opt"]
        for p in [p for p in opt.state if p not in saved["state"]]:
            del opt.state[p]
        for p, s in saved["state"].items():
            current = opt.state[p]
            for k in [k for k in current if k not in s]:
                del current[k]
            for k, v in s.items():
                same = isinstance(current.get(k), torch.Tensor) and isinstance(v, torch.Tensor)
                if same and current[k].shape == v.shape and current[k].dtype == v.dtype:
                    current[k].copy_(v)
                else:
                    current[k] = v
        for group, values in zip(opt.param_groups, saved["groups"]):
            group.update(values)
        if saved["full"] is not None:
            opt.load_state_dict(saved["full"])

    # -- Lightning hooks ------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if len(trainer.optimizers) != 1:
            raise ValueError(
                "LRFinder needs exactly one optimizer, the module configures "
                f"{len(trainer.optimizers)}"
            )
        if trainer.max_epochs != -1:
            trainer.estimated_stepping_batches  # noqa: B018 -- loads the training loader
            if trainer.num_training_batches == 0:
                raise ValueError("lr_find needs training batches, but the training loader is empty")
        self.lrs, self.losses, self.raw_losses = [], [], []
        self._avg, self._count, self._best = 0.0, 0, math.inf
        self.stop_reason = None
        self._snapshot(pl_module, trainer.optimizers[0])

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        set_hyper(trainer.optimizers[0], "lr", self.sched(trainer.global_step / self.num_it))

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return  # a skipped batch: nothing to record
        # Averaged over processes, so every DDP rank takes the same stop decision.
        loss = float(trainer.strategy.reduce(loss.detach().float().mean(), reduce_op="mean"))
        stop = not math.isfinite(loss)
        if stop:
            self.stop_reason = f"the loss is {loss}"
        else:
            self._count += 1
            self._avg = self.beta * self._avg + (1 - self.beta) * loss
            smooth = self._avg / (1 - self.beta**self._count)
            self.lrs.append(get_hyper(trainer.optimizers[0], "lr")[-1])
            self.losses.append(smooth)
            self.raw_losses.append(loss)
            self._best = min(self._best, smooth)
            stop = self.stop_div and smooth > 4 * self._best
            if stop:
                self.stop_reason = (
                    f"the smoothed loss {smooth:.4g} exceeds 4x its minimum {self._best:.4g} "
                    f"(lr {self.lrs[-1]:.2e})"
                )
        if stop or trainer.global_step >= self.num_it:
            trainer.should_stop = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.restore()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.restore()

    def suggest(
        self, suggest_funcs: Sequence[SuggestFunc] | SuggestFunc = (valley,)
    ) -> tuple[tuple, list[tuple[float, float]]]:
        """The suggestions as a named tuple, and the points to mark on the plot.

        As the reference, the first `num_it // 10` and the last 5 points are left out of the
        curve the suggestion functions see. Each point is the suggested lr and the plotted curve's
        loss there (interpolated on the log-lr axis), so a marker sits at the lr its label names;
        a suggestion left of the curve's first lr (possible for `minimum`, a tenth of an lr) is
        marked at the first point's loss."""
        funcs = _as_funcs(suggest_funcs)
        names = [_func_name(f) for f in funcs]
        suggested = namedtuple("SuggestedLRs", names)
        lrs = np.asarray(self.lrs[self.num_it // 10 : -SKIP_END], dtype=np.float64)
        losses = np.asarray(self.losses[self.num_it // 10 : -SKIP_END], dtype=np.float64)
        if len(losses) < 2:
            warnings.warn(
                f"lr_find recorded {len(self.losses)} losses, too few for suggestions once the "
                f"first {self.num_it // 10} and last 5 are left out; the suggestions are nan "
                "(raise num_it, lower start_lr, or pass stop_div=False)",
                UserWarning,
                stacklevel=2,
            )
            return suggested(*[math.nan] * len(funcs)), []
        values = [float(func(lrs, losses, self.num_it)[0]) for func in funcs]
        end = len(self.lrs) - SKIP_END  # the plotted curve (plot_lr_find's skip_end)
        log_lrs = np.log(np.asarray(self.lrs[:end], dtype=np.float64))
        plotted = np.asarray(self.losses[:end], dtype=np.float64)
        points = [
            (v, float(np.interp(math.log(v), log_lrs, plotted)) if v > 0 else math.nan)
            for v in values
        ]
        return suggested(*values), points


def _clone_state(state: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
        for k, v in state.items()
    }


def _func_name(func: Callable) -> str:
    return func.func.__name__ if isinstance(func, functools.partial) else func.__name__


def _as_funcs(suggest_funcs: Any) -> list[SuggestFunc]:
    funcs = [suggest_funcs] if callable(suggest_funcs) else list(suggest_funcs)
    for f in funcs:
        if not callable(f):
            raise TypeError(f"suggest_funcs must be callables like valley or steep, got {f!r}")
    names = [_func_name(f) for f in funcs]
    if len(set(names)) != len(names):
        raise ValueError(f"suggest_funcs must have distinct names, got {names}")
    return funcs


def plot_lr_find(
    lrs: Sequence[float],
    losses: Sequence[float],
    points: Sequence[tuple[float, float]] = (),
    labels: Sequence[str] = (),
    skip_end: int = SKIP_END,
    use_pyplot: bool = False,
) -> Figure:
    """Loss against learning rate on a log axis, each `points[i]` marked and labelled
    `labels[i]`; the last `skip_end` points are left out, as the reference. `use_pyplot`
    registers the figure so notebooks show it."""
    end = len(lrs) - skip_end if skip_end else len(lrs)
    if use_pyplot:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
    else:
        fig = Figure()
        ax = fig.subplots()
    ax.plot(lrs[:end], losses[:end])
    ax.set_xscale("log")
    ax.set_xlabel("Learning Rate")
    ax.set_ylabel("Loss")
    for (lr, loss), label, color in zip(points, labels, _cycle_colors()):
        ax.plot([lr], [loss], "o", color=color, label=label)
    if points:
        ax.legend(loc="best")
    return fig


def _cycle_colors() -> list[str]:
    import matplotlib as mpl

    colors = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    return colors[1:] + colors[:1]  # the curve takes the first colour


_FIXED_TRAINER_ARGS = ("max_steps", "max_epochs")


def lr_find(
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule | None = None,
    start_lr: float | Sequence[float] = 1e-7,
    end_lr: float | Sequence[float] = 10.0,
    num_it: int = 100,
    stop_div: bool = True,
    suggest_funcs: Sequence[SuggestFunc] | SuggestFunc | None = (valley,),
    show_plot: bool = True,
    plot_path: str | Path | None = None,
    train_dataloaders: Any = None,
    **trainer_kwargs: Any,
) -> tuple | None:
    """Run the learning-rate finder on `module` and return the suggestions as a named tuple.

    The training loader is cycled if shorter than `num_it`. Weights and optimizer state are
    restored afterwards, also when the run raises. `show_plot` draws the curve through pyplot
    (notebooks display it); `plot_path` saves it as PNG. Extra keyword arguments go to the
    `Trainer` (`accelerator`, `precision`, ...). Progress shows as a bar over the `num_it` steps
    on a terminal and as at most five lines otherwise (`LRFindProgress`); pass
    `enable_progress_bar=False` for none.
    """
    finder = LRFinder(start_lr, end_lr, num_it, stop_div)  # checks start_lr, end_lr, num_it
    funcs = _as_funcs(suggest_funcs) if suggest_funcs is not None else None
    for arg in _FIXED_TRAINER_ARGS:
        if arg in trainer_kwargs:
            raise ValueError(f"lr_find sets {arg} itself (from num_it); do not pass {arg}")
    if datamodule is not None and train_dataloaders is not None:
        raise ValueError("pass either datamodule or train_dataloaders, not both")
    if plot_path is not None and not Path(plot_path).parent.is_dir():
        raise ValueError(f"plot_path {str(plot_path)!r}: its folder does not exist")
    callbacks = [*trainer_kwargs.get("callbacks", []), finder]
    progress = trainer_kwargs.get("enable_progress_bar", True)
    if progress and not any(isinstance(cb, ProgressBar) for cb in callbacks):
        callbacks.append(LRFindProgress(finder))
    settings = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
        **trainer_kwargs,
        "enable_progress_bar": progress,
        # One batch per epoch at least, so num_it epochs always suffice: shorter loaders cycle.
        "max_epochs": num_it,
        "max_steps": num_it,
        "callbacks": callbacks,
    }
    trainer = pl.Trainer(**settings)
    # An AccelModule prints no epoch table for the mock training (the reference neither), and
    # keeps the optimizer it had as `module.opt`.
    mock = module.mock_fit() if isinstance(module, AccelModule) else contextlib.nullcontext()
    try:
        with mock, quiet_known_warnings():
            trainer.fit(module, train_dataloaders=train_dataloaders, datamodule=datamodule)
    finally:
        finder.restore()
    if not finder.lrs and trainer.num_training_batches == 0:
        raise ValueError("lr_find needs training batches, but the training loader is empty")
    if funcs is None:
        labels, points, result = [], [], None
    else:
        result, points = finder.suggest(funcs)
        labels = [f"{name}: {lr:.2e}" for name, lr in result._asdict().items()]
    if show_plot or plot_path is not None:
        fig = plot_lr_find(finder.lrs, finder.losses, points, labels, use_pyplot=show_plot)
        if plot_path is not None:
            fig.savefig(plot_path, format="png")
    return result
