"""`OptimizerStatsMonitor`: the optimizer's hyper-parameters and per-layer state in TensorBoard."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.optim import Optimizer

from ..lightning.internals import disable_default_hp_metric
from ..loop.callback import Callback
from .cadence import Cadence, planned_steps, spread
from .histograms import SAMPLE
from .hyperparams import flat_scalars, group_hypers, hparam_value, optimizer_label
from .layers import LayerGrouping, by_module
from .stats import (
    HISTOGRAMS,
    STATS,
    StepSnapshot,
    layer_histograms,
    layer_stats,
    take_snapshot,
)
from .writer import write_histograms, write_hparams_session, write_scalars

POINTS = 50  # per-layer statistics: points per run, whatever its length
HISTOGRAM_POINTS = 12  # histograms: the first step, the last, and 10 in between
# When the run's length is unknown: the trainer's interval, histograms this many times rarer.
HISTOGRAM_FACTOR = 10


def _check_int(name: str, value: Any, low: int, allowed: str, none: bool = True) -> None:
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _check_names(name: str, value: Any, known: tuple[str, ...]) -> None:
    if isinstance(value, str) or not all(v in known for v in value):
        raise ValueError(f"{name} must be a sequence of names from {known}, got {value!r}")


class OptimizerStatsMonitor(Callback, pl.Callback):
    """Log the optimizer's hyper-parameters and per-layer statistics to TensorBoard.

    Use it either as a Lightning callback (``Trainer(callbacks=[monitor])``) or as one of the
    chapter's callbacks (``CallbackBridge(monitor)``, ``AccelModule(cbs=[monitor])``); in a bridge
    it follows the bridge's events (``before_fit``, ``before_step``, ``after_step``, ``after_fit``).

    At its defaults, whatever the length of the run:

    - every optimizer step, each hyper-parameter of each parameter group
      (``hypers/<name>/group<i>``: ``lr``, ``mom``, ``sqr_mom``, ``wd``, ...);
    - at `points` (50) steps spread evenly over the planned steps
      (``trainer.estimated_stepping_batches``), the first and last included, the per-layer
      statistics of `stats.STATS` (``<stat>/<layer>``), exact over every element;
    - at `histograms` (12) such steps, the first and last included, histograms of the weights,
      gradients, updates and optimizer state per layer (``<kind>/<layer>``, kinds of
      `stats.HISTOGRAMS`): min, max and moments over every element, the buckets of a tensor of
      more than `histogram_sample` elements filled from a fixed random sample of them;
    - at the end of training, the run's settings and final metrics in the HParams tab.

    A run whose length Lightning cannot estimate gets statistics at its first step and every
    ``trainer.log_every_n_steps`` steps, histograms at its first step and 10x rarer.

    It reads AccelOptimizer's state (``grad_avg``, ``sqr_avg``, ``trust_ratio``, ``local_lr``) and
    torch's (``exp_avg``, ``exp_avg_sq``, ``momentum_buffer``, ``square_avg``). A step it does not
    log costs a set look-up (and the hyper-parameter scalars); for a logged step it keeps one copy
    of the parameters between steps (the update needs the weights from before the step).

    Args:
        points: steps with per-layer statistics per run (>= 1), spread evenly over it.
        histograms: steps with histograms per run, spread evenly over it (0 turns them off).
        log_every_n_steps: instead of `points`, statistics every n optimizer steps (the n-th,
            2n-th, ... step, as the trainer's argument of that name).
        histogram_every_n_steps: instead of `histograms`, histograms every n steps (0: off).
        hypers_every_n_steps: steps between two logs of the hyper-parameters (default: every).
        layers: maps a parameter's qualified name to the layer it is reported under, or None to
            leave it out (see `layers.by_module`, `layers.by_depth`, `layers.matching`).
        stats: which per-layer statistics to log, a subset of `stats.STATS`.
        histogram_kinds: which histograms to write, a subset of `stats.HISTOGRAMS`.
        histogram_sample: elements drawn per tensor to fill a histogram's buckets (a tensor
            this size or smaller is binned whole); None bins every element, exactly, at some
            fifteen times the cost of a pass over the values on a CPU.
        log_hparams: write the run's settings and final metrics to the HParams tab.
        hparams: extra run settings for the HParams tab (e.g. ``{"recipe": "adam"}``).
        hparam_metrics: names of the trainer's ``callback_metrics`` reported as final metrics;
            None reports all of them.
    """

    # In a bridge, run after the other callbacks of an event: gradients are seen once every
    # callback (clipping, scaling) has had its say, and the step after all of them.
    order = 100

    def __init__(
        self,
        *,  # keyword-only: the first argument was once `log_every_n_steps`
        points: int = POINTS,
        histograms: int = HISTOGRAM_POINTS,
        log_every_n_steps: int | None = None,
        histogram_every_n_steps: int | None = None,
        hypers_every_n_steps: int = 1,
        layers: LayerGrouping = by_module,
        stats: Sequence[str] = STATS,
        histogram_kinds: Sequence[str] = HISTOGRAMS,
        histogram_sample: int | None = SAMPLE,
        log_hparams: bool = True,
        hparams: Mapping[str, Any] | None = None,
        hparam_metrics: Sequence[str] | None = None,
    ) -> None:
        _check_int("points", points, 1, "an int >= 1", none=False)
        _check_int("histograms", histograms, 0, "an int >= 0 (0 turns them off)", none=False)
        _check_int("log_every_n_steps", log_every_n_steps, 1, "None or an int >= 1")
        _check_int(
            "histogram_every_n_steps",
            histogram_every_n_steps,
            0,
            "None or an int >= 0 (0 turns them off)",
        )
        _check_int("hypers_every_n_steps", hypers_every_n_steps, 1, "an int >= 1", none=False)
        if not callable(layers):
            raise TypeError(f"layers must be a callable name -> layer name or None, got {layers!r}")
        _check_names("stats", stats, STATS)
        _check_names("histogram_kinds", histogram_kinds, HISTOGRAMS)
        _check_int("histogram_sample", histogram_sample, 1, "None (every element) or an int >= 1")
        self.points = points
        self.histograms = histograms
        self.log_every_n_steps = log_every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps
        self.hypers_every_n_steps = hypers_every_n_steps
        self.layers = layers
        self.stats = tuple(stats)
        self.histogram_kinds = tuple(histogram_kinds)
        self.histogram_sample = histogram_sample
        self.log_hparams = log_hparams
        self.hparams = dict(hparams or {})
        self.hparam_metrics = None if hparam_metrics is None else tuple(hparam_metrics)
        self._logger: TensorBoardLogger | None = None
        self._names: dict[int, str] = {}
        self._pending: list[tuple[Optimizer, StepSnapshot, bool]] = []
        self._start_hparams: dict[str, Any] = {}
        self._copies: dict[int, Tensor] = {}
        # Resolved from the trainer when fitting starts.
        self.stats_cadence, self.histogram_cadence = Cadence(), Cadence()

    # ----------------------------------------------------------------------------- set-up

    def _in_bridge(self) -> bool:
        # A bridge sets `learn`; its events then drive the monitor and Lightning's hooks must not.
        return self.__dict__.get("learn") is not None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and not self._in_bridge():
            self._find_logger(trainer)

    def _find_logger(self, trainer: pl.Trainer) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        self._logger = loggers[0] if loggers else None
        if self._logger is None:
            found = [type(lg).__name__ for lg in trainer.loggers] or "no logger"
            rank_zero_warn(
                f"OptimizerStatsMonitor writes to TensorBoard only and found {found} among the "
                "trainer's loggers; it will log nothing. Add a lightning.pytorch.loggers."
                "TensorBoardLogger to `Trainer(logger=...)`."
            )

    def _active(self, trainer: pl.Trainer) -> bool:
        # Other ranks hold the same (all-reduced) gradients; rank zero alone writes.
        return self._logger is not None and trainer.is_global_zero

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._in_bridge():
            self._start(trainer, pl_module)

    def before_fit(self) -> None:
        """Bridge event: find the logger and prepare, as `setup` and `on_fit_start` do."""
        self._find_logger(self.learn.trainer)
        self._start(self.learn.trainer, self.learn.pl_module)

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stats_cadence, self.histogram_cadence = self.cadences(trainer)
        self._copies = {}
        self._names = {id(p): name for name, p in pl_module.named_parameters()}
        self._pending = []
        if not self._active(trainer) or not self.log_hparams:
            return
        # Lightning writes a placeholder HParams session (hp_metric = -1) right after this hook,
        # and TensorBoard shows the first session of a run: without this, ours would be hidden.
        disable_default_hp_metric(self._logger)
        self._start_hparams = self._run_settings(trainer, pl_module)

    def cadences(self, trainer: pl.Trainer) -> tuple[Cadence, Cadence]:
        """The steps that get statistics and those that get histograms, for this fit."""
        total = planned_steps(trainer)
        fallback = max(1, int(trainer.log_every_n_steps or 1))
        if self.log_every_n_steps is not None:
            stats = Cadence(every=self.log_every_n_steps)
        elif total is not None:
            stats = Cadence(steps=spread(self.points, total))
        else:
            stats = Cadence(steps=frozenset({0}), every=fallback)
        hist_every = self.histogram_every_n_steps
        if hist_every is not None:
            hists = Cadence(every=hist_every)
        elif self.histograms == 0 or not self.histogram_kinds:
            hists = Cadence()
        elif total is not None:
            hists = Cadence(steps=spread(self.histograms, total))
        else:
            hists = Cadence(steps=frozenset({0}), every=fallback * HISTOGRAM_FACTOR)
        return stats, hists

    def _run_settings(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        for key, value in dict(getattr(pl_module, "hparams_initial", {}) or {}).items():
            settings[key] = hparam_value(value)
        for k, opt in enumerate(trainer.optimizers):
            prefix = "optimizer" if len(trainer.optimizers) == 1 else f"optimizer{k}"
            settings[prefix] = optimizer_label(opt)
            groups = group_hypers(opt)
            if groups:
                for name, value in groups[0].items():
                    settings[f"{prefix}.{name}"] = value
        settings["max_epochs"] = hparam_value(trainer.max_epochs)
        settings["max_steps"] = hparam_value(trainer.max_steps)
        settings["accumulate_grad_batches"] = trainer.accumulate_grad_batches
        settings["precision"] = str(trainer.precision)
        settings.update({k: hparam_value(v) for k, v in self.hparams.items()})
        return settings

    # ------------------------------------------------------------------------- each step

    def _layer_of(self, p: Tensor, index: int) -> str | None:
        return self.layers(self._names.get(id(p), f"param{index}"))

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        if not self._in_bridge():
            self._before_step(trainer, optimizer)

    def before_batch(self) -> None:
        """Bridge event: a snapshot whose step was cancelled (no after_step) must not linger."""
        self._pending = []

    def before_step(self) -> None:
        """Bridge event: gradients are final and the step is next."""
        self._before_step(self.learn.trainer, self.learn.opt)

    def _before_step(self, trainer: pl.Trainer, optimizer: Optimizer) -> None:
        if not self._active(trainer):
            return
        step = trainer.global_step
        several = len(trainer.optimizers) > 1
        k = next((i for i, o in enumerate(trainer.optimizers) if o is optimizer), 0)
        prefix = f"opt{k}." if several else ""
        if step % self.hypers_every_n_steps == 0:
            hypers = {
                f"hypers/{name}/{prefix}group{i}": value
                for i, group in enumerate(group_hypers(optimizer))
                for name, value in group.items()
            }
            write_scalars(self._logger, hypers, step)
        histograms = step in self.histogram_cadence
        if not histograms and step not in self.stats_cadence:
            return

        params, layer_ids, lrs = [], [], []
        names: dict[str, int] = {}
        index = 0
        for group in optimizer.param_groups:
            lr = flat_scalars(group).get("lr", 0.0)
            for p in group["params"]:
                index += 1
                if p.grad is None:
                    continue
                layer = self._layer_of(p, index - 1)
                if layer is None:
                    continue
                params.append(p)
                layer_ids.append(names.setdefault(layer, len(names)))
                lrs.append(lr)
        if not params:
            return
        needs_weights = (histograms and "update" in self.histogram_kinds) or bool(
            {"update_ratio", "step_size"} & set(self.stats)
        )
        copies = [self._copy_of(p) for p in params] if needs_weights else None
        snapshot = take_snapshot(step, params, list(names), layer_ids, lrs, needs_weights, copies)
        self._pending.append((optimizer, snapshot, histograms))

    def _copy_of(self, p: Tensor) -> Tensor:
        """The buffer that holds `p`'s weights from before a logged step, reused every step."""
        copy = self._copies.get(id(p))
        if copy is None or copy.shape != p.shape or copy.dtype != p.dtype:
            copy = self._copies[id(p)] = torch.empty_like(p, memory_format=torch.preserve_format)
        return copy

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self._in_bridge():
            self._after_step()

    def after_step(self) -> None:
        """Bridge event: the step has happened."""
        self._after_step()

    def _after_step(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        for optimizer, snapshot, histograms in pending:
            self._log_after_step(optimizer, snapshot, histograms)

    def _log_after_step(self, optimizer: Optimizer, snap: StepSnapshot, histograms: bool) -> None:
        states = [optimizer.state.get(p, {}) for p in snap.params]
        metrics = {
            f"{stat}/{layer}": value
            for stat, values in layer_stats(snap, states).items()
            if stat in self.stats
            for layer, value in values.items()
        }
        write_scalars(self._logger, metrics, snap.step)
        if histograms:
            hists = layer_histograms(
                snap, states, kinds=self.histogram_kinds, sample=self.histogram_sample
            )
            write_histograms(
                self._logger,
                {f"{kind}/{layer}": h for kind, per in hists.items() for layer, h in per.items()},
                snap.step,
            )

    # ------------------------------------------------------------------------------ end

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._in_bridge():
            self._finish(trainer)

    def after_fit(self) -> None:
        """Bridge event: training is over (the logger is still open)."""
        self._finish(self.learn.trainer)

    def _finish(self, trainer: pl.Trainer) -> None:
        self._copies = {}
        if not self._active(trainer) or not self.log_hparams:
            return
        metrics = {}
        for name, value in trainer.callback_metrics.items():
            if self.hparam_metrics is not None and name not in self.hparam_metrics:
                continue
            scalar = flat_scalars({name: value}).get(name)
            if scalar is not None:
                metrics[f"final/{name}"] = scalar
        self._logger.log_metrics(metrics, step=trainer.global_step)
        if not write_hparams_session(
            self._logger, self._start_hparams, metrics, trainer.global_step
        ):
            rank_zero_warn(
                "OptimizerStatsMonitor writes the HParams session through torch's SummaryWriter "
                f"only; the logger's writer is {type(self._logger.experiment).__name__}, so the "
                "run has final metrics but no HParams session."
            )
