"""`OptimizerStatsMonitor`: the optimizer's hyper-parameters and per-layer state in TensorBoard."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.optim import Optimizer
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from ..lightning.internals import disable_default_hp_metric
from ..loop.callback import Callback
from .hyperparams import flat_scalars, group_hypers, hparam_value, optimizer_label
from .layers import LayerGrouping, by_module
from .stats import STATS, StepSnapshot, layer_histograms, layer_stats, take_snapshot

HISTOGRAM_FACTOR = 10  # histograms cost far more than scalars: by default 10x rarer


def _positive_int_or_none(name: str, value: Any, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
        allowed = "None or an int >= 0 (0 turns them off)" if allow_zero else "None or an int >= 1"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


class OptimizerStatsMonitor(Callback, pl.Callback):
    """Log the optimizer's hyper-parameters and per-layer statistics to TensorBoard.

    Use it either as a Lightning callback (``Trainer(callbacks=[monitor])``) or as one of the
    chapter's callbacks (``CallbackBridge(monitor)``, ``AccelModule(cbs=[monitor])``); in a bridge
    it follows the bridge's events (``before_fit``, ``before_step``, ``after_step``, ``after_fit``).

    Every `log_every_n_steps` optimizer steps (default: the trainer's), it writes each
    hyper-parameter of each parameter group (``hypers/<name>/group<i>``) and, per layer, the
    statistics of `stats.STATS` (``<stat>/<layer>``); every `histogram_every_n_steps` steps
    (default: 10x rarer) histograms of the per-element values behind them; at the end of training
    the run's settings and final metrics in the HParams tab.

    It reads AccelOptimizer's state (``grad_avg``, ``sqr_avg``, ``trust_ratio``, ``local_lr``) and
    torch's (``exp_avg``, ``exp_avg_sq``, ``momentum_buffer``, ``square_avg``). Steps it does not
    log cost one integer comparison: weights are copied only just before a logged step.

    Args:
        log_every_n_steps: optimizer steps between two logs, like the trainer's argument.
        histogram_every_n_steps: steps between histograms; 0 turns them off.
        layers: maps a parameter's qualified name to the layer it is reported under, or None to
            leave it out (see `layers.by_module`, `layers.by_depth`, `layers.matching`).
        stats: which per-layer statistics to log, a subset of `stats.STATS`.
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
        log_every_n_steps: int | None = None,
        histogram_every_n_steps: int | None = None,
        layers: LayerGrouping = by_module,
        stats: Sequence[str] = STATS,
        log_hparams: bool = True,
        hparams: Mapping[str, Any] | None = None,
        hparam_metrics: Sequence[str] | None = None,
    ) -> None:
        _positive_int_or_none("log_every_n_steps", log_every_n_steps)
        _positive_int_or_none("histogram_every_n_steps", histogram_every_n_steps, allow_zero=True)
        if not callable(layers):
            raise TypeError(f"layers must be a callable name -> layer name or None, got {layers!r}")
        unknown = [s for s in stats if s not in STATS]
        if isinstance(stats, str) or unknown:
            raise ValueError(f"stats must be a sequence of names from {STATS}, got {stats!r}")
        self.log_every_n_steps = log_every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps
        self.layers = layers
        self.stats = tuple(stats)
        self.log_hparams = log_hparams
        self.hparams = dict(hparams or {})
        self.hparam_metrics = None if hparam_metrics is None else tuple(hparam_metrics)
        self._logger: TensorBoardLogger | None = None
        self._names: dict[int, str] = {}
        self._pending: list[tuple[Optimizer, StepSnapshot, bool]] = []
        self._start_hparams: dict[str, Any] = {}
        self._every, self._hist_every = 1, 0  # resolved from the trainer when fitting starts

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
        self._every = self.log_every_n_steps or trainer.log_every_n_steps
        hist = self.histogram_every_n_steps
        self._hist_every = self._every * HISTOGRAM_FACTOR if hist is None else hist
        self._names = {id(p): name for name, p in pl_module.named_parameters()}
        self._pending = []
        if not self._active(trainer) or not self.log_hparams:
            return
        # Lightning writes a placeholder HParams session (hp_metric = -1) right after this hook,
        # and TensorBoard shows the first session of a run: without this, ours would be hidden.
        disable_default_hp_metric(self._logger)
        self._start_hparams = self._run_settings(trainer, pl_module)

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
        # Same rhythm as Lightning's own logging: the n-th, 2n-th, ... step (1-based).
        if (step + 1) % self._every:
            return
        several = len(trainer.optimizers) > 1
        k = next((i for i, o in enumerate(trainer.optimizers) if o is optimizer), 0)
        prefix = f"opt{k}." if several else ""

        metrics = {
            f"hypers/{name}/{prefix}group{i}": value
            for i, hypers in enumerate(group_hypers(optimizer))
            for name, value in hypers.items()
        }
        self._logger.log_metrics(metrics, step=step)

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
        histograms = self._hist_every > 0 and (step + 1) % self._hist_every == 0
        needs_weights = histograms or bool({"update_ratio", "step_size"} & set(self.stats))
        snapshot = take_snapshot(step, params, list(names), layer_ids, lrs, needs_weights)
        self._pending.append((optimizer, snapshot, histograms))

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
        self._logger.log_metrics(metrics, step=snap.step)
        if histograms:
            writer = self._logger.experiment
            for kind, per_layer in layer_histograms(snap, states).items():
                for layer, h in per_layer.items():
                    writer.add_histogram_raw(
                        f"{kind}/{layer}",
                        h.min,
                        h.max,
                        h.num,
                        h.sum,
                        h.sum_squares,
                        h.limits,
                        h.counts,
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
        experiment, start, end = hparams_summaries(self._start_hparams, metrics)
        # The logger's own writer: a second writer would start a second event file.
        writer = self._logger.experiment._get_file_writer()
        for summary in (experiment, start, end):
            writer.add_summary(summary, trainer.global_step)
        writer.flush()
