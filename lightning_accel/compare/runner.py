"""The chapter's experiment: five optimizer recipes trained from the same start, side by side.

Each recipe gets a fresh copy of one randomly initialized model, the same data order and the same
augmentation draws (the global seed is reset before each), so the optimizers are the only
difference. `run_compare` is what `lightning-accel compare` runs: it keeps the recipes a logdir
already holds, trains the others, and stops cleanly on SIGINT/SIGTERM (`logdir.py`,
`interrupt.py`).
"""

from __future__ import annotations

import contextlib
import copy
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..lightning.known_warnings import quiet_known_warnings
from ..module import AccelModule
from ..monitor.stats_monitor import OptimizerStatsMonitor
from ..schedule.fit import fit, fit_one_cycle
from ..schedule.lr_finder import lr_find
from ..schedule.suggestions import minimum, steep, valley
from ..vision.digits import DigitsDataModule
from ..vision.download import DatasetUnavailableError
from ..vision.imagenette import ImagenetteDataModule
from ..vision.models import vision_model, vision_splitter
from .epoch_table import EpochTable
from .errors import CompareError, CompareInterrupted
from .files import atomic_path
from .interrupt import Interrupted, StopBetweenBatches, StopRequest, stop_on_signals
from .logdir import ComparisonLog
from .recipes import RECIPES, Recipe
from .report import (
    RecipeResult,
    epoch_table,
    epoch_table_header,
    epoch_table_line,
    plot_accuracy,
    plot_losses,
    summary_table,
    write_csv,
)
from .settings import (
    NAMED_DATA,
    CompareConfig,
    default_precision,
    default_threads,
    experiment_settings,
    quiet_lightning_logs,
)

__all__ = ["make_datamodule", "run_compare"]


def make_datamodule(config: CompareConfig) -> pl.LightningDataModule:
    """The data module `config.data` names: digits, an Imagenette variant, or a folder."""
    if config.data == "digits":
        return DigitsDataModule(
            size=config.resolved_size,
            batch_size=config.resolved_batch_size,
            num_workers=config.num_workers or 0,
            seed=config.seed,
            channels_last=config.channels_last,
        )
    common = dict(
        presize=config.presize,
        size=config.resolved_size,
        batch_size=config.resolved_batch_size,
        num_workers=config.num_workers,
        seed=config.seed,
        channels_last=config.channels_last,
        progress=config.progress_bar,
    )
    if config.data in NAMED_DATA:
        dataset, variant = NAMED_DATA[config.data]
        return ImagenetteDataModule(
            variant=variant, dataset=dataset, data_dir=config.data_dir, **common
        )
    return ImagenetteDataModule(data_dir=Path(config.data), **common)


def initial_weights(config: CompareConfig, n_out: int) -> dict[str, torch.Tensor]:
    """The one random initialization every recipe starts from."""
    pl.seed_everything(config.seed, verbose=False)
    model = vision_model(config.arch, n_out=n_out)
    return copy.deepcopy(model.state_dict())


def _fresh_model(config: CompareConfig, n_out: int, weights: dict[str, torch.Tensor]) -> nn.Module:
    model = vision_model(config.arch, n_out=n_out)
    model.load_state_dict(weights)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


@dataclass
class _Run:
    """What one invocation of `run_compare` shares between its recipes."""

    config: CompareConfig
    log: ComparisonLog
    datamodule: pl.LightningDataModule
    weights: dict[str, torch.Tensor]
    stop: StopRequest
    echo: Callable[[str], None]
    show_bars: bool
    rank_zero: bool


def _trainer_kwargs(run: _Run, logger: Any) -> dict[str, Any]:
    config, limit = run.config, run.config.limit_batches
    kwargs = dict(
        accelerator=config.accelerator,
        devices=config.devices,
        precision=config.precision or default_precision(),
        logger=logger,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=run.show_bars,
        num_sanity_val_steps=0,
        limit_train_batches=limit,
        limit_val_batches=limit,
        default_root_dir=config.logdir,
        log_every_n_steps=1,
        **config.extra_trainer_kwargs,
    )
    kwargs["callbacks"] = [*kwargs.get("callbacks", []), StopBetweenBatches(run.stop)]
    return kwargs


def _module(recipe: Recipe, model: nn.Module, num_classes: int) -> AccelModule:
    # Micro-averaged accuracy is the fraction of correct predictions, the chapter's `accuracy`;
    # logged by the module, it reaches the HParams tab as `final/accuracy`.
    module = AccelModule(
        model,
        nn.CrossEntropyLoss(),
        opt_func=recipe.opt_func,
        lr=recipe.lr,
        splitter=vision_splitter,
        metrics={"accuracy": MulticlassAccuracy(num_classes, average="micro")},
    )
    # The bridge's Recorder would print its own table; compare prints the chapter's (EpochTable).
    recorder = module.recorder
    if recorder is not None:
        recorder.print_table = False
    return module


def _monitor(recipe: Recipe, config: CompareConfig) -> OptimizerStatsMonitor:
    """The optimizer's internals for TensorBoard, and the recipe in the HParams tab.

    By default the monitor's own cadence: hyper-parameters every step, per-layer statistics at
    50 steps and histograms at 12 spread over the recipe's run (first and last step included);
    `--monitor-every N` logs statistics every N steps and histograms every 10 N instead.
    """
    every = config.monitor_every
    cadence = {}
    if every is not None:
        cadence = {"log_every_n_steps": every, "histogram_every_n_steps": 10 * every}
    return OptimizerStatsMonitor(
        **cadence,
        hparams={"recipe": recipe.name, "lr": recipe.lr, "data": config.data, "seed": config.seed},
        hparam_metrics=("valid_loss", "accuracy"),
    )


def run_recipe(run: _Run, recipe: Recipe) -> RecipeResult:
    """Train a fresh copy of the shared weights with `recipe`; its run goes to its staging
    folder, and its table and loss curve come back."""
    config, datamodule = run.config, run.datamodule
    model = _fresh_model(config, datamodule.num_classes, run.weights)
    module = _module(recipe, model, datamodule.num_classes)
    if run.show_bars:
        table = EpochTable()
    else:  # a line per epoch, as it ends: readable in a log file, unlike redrawn bars
        run.echo(epoch_table_header())
        table = EpochTable(on_row=lambda row: run.echo(epoch_table_line(row)))
    staging = run.log.staging_dir(recipe.name)
    logger = TensorBoardLogger(
        config.logdir, name=staging.name, version="", default_hp_metric=False
    )
    kwargs = _trainer_kwargs(run, logger)
    cbs: list[Any] = [table]
    if config.monitor_every != 0:
        cbs.append(_monitor(recipe, config))
    pl.seed_everything(config.seed, verbose=False)  # same augmentation and dropout draws
    wall, cpu = time.perf_counter(), time.process_time()
    if recipe.one_cycle:
        moms = {} if recipe.moms is None else {"moms": recipe.moms}
        fit_one_cycle(
            module, config.epochs, recipe.lr, datamodule=datamodule, cbs=cbs, **moms, **kwargs
        )
    else:
        fit(module, config.epochs, recipe.lr, datamodule=datamodule, cbs=cbs, **kwargs)
    logger.finalize("success")  # (Lightning finalizes it as "failed" when the fit raises)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if run.show_bars:
        run.echo(epoch_table(table.rows))
    return RecipeResult(
        name=recipe.name,
        description=recipe.description(config.epochs),
        reference_accuracy=recipe.reference_accuracy,
        rows=table.rows,
        train_losses=table.step_losses,
        wall_seconds=wall,
        cpu_seconds=cpu,
    )


LR_FIND_PLOT = "lr_find_sgd.png"


def run_lr_find(run: _Run) -> dict[str, float]:
    """The chapter's `lr_find` for plain SGD, from the shared initial weights; plot saved."""
    config, datamodule = run.config, run.datamodule
    module = _module(
        RECIPES["sgd"],
        _fresh_model(config, datamodule.num_classes, run.weights),
        datamodule.num_classes,
    )
    kwargs = _trainer_kwargs(run, logger=False)
    for key in ("logger", "limit_val_batches", "num_sanity_val_steps", "enable_checkpointing"):
        kwargs.pop(key)
    kwargs["enable_progress_bar"] = config.progress_bar  # a bar on a terminal, else a few lines
    pl.seed_everything(config.seed, verbose=False)
    with contextlib.ExitStack() as stack:
        plot = None
        if run.rank_zero:
            plot = stack.enter_context(atomic_path(Path(config.logdir) / LR_FIND_PLOT))
        with quiet_known_warnings():
            suggestions = lr_find(
                module,
                datamodule=datamodule,
                num_it=config.lr_find_iters,
                suggest_funcs=(valley, minimum, steep),
                show_plot=False,
                plot_path=plot,
                **kwargs,
            )
    return {name: float(lr) for name, lr in suggestions._asdict().items()}


def _train(run: _Run, recipe: Recipe) -> RecipeResult:
    found = None
    if recipe.name == "sgd" and run.config.lr_find:
        run.echo(f"\nlr_find (SGD): {run.config.lr_find_iters} steps from lr 1e-07 to 10 ...")
        found = run_lr_find(run)
        shown = ", ".join(f"{k}={v:.3g}" for k, v in found.items())
        run.echo(f"lr_find (SGD): {shown}  [plot: {Path(run.config.logdir) / LR_FIND_PLOT}]")
    run.echo(f"\n{recipe.name}: {recipe.description(run.config.epochs)}")
    if run.rank_zero:
        run.log.start(recipe.name)
    result = run_recipe(run, recipe)
    result.lr_find = found
    return result


def _one_line(exc: BaseException) -> str:
    """The message of `exc` in one line; an exception re-raised from a DataLoader worker carries
    the worker's traceback, whose last line is the original message."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(exc).__name__
    last = lines[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    return last[len(prefix) :] if last.startswith(prefix) else last


def _silent(text: str) -> None:
    pass


def run_compare(config: CompareConfig, echo: Callable[[str], None] = print) -> list[RecipeResult]:
    """Run the recipes of `config` that its logdir does not hold yet, print the tables, write
    the CSV, the plots and the runs; return the results of `config.recipes`, kept or new.

    Raises `CompareError` for a setting it cannot run with and `CompareInterrupted` after a
    stop signal (the finished recipes saved and summarized first).
    """
    config.validate()
    rank_zero = rank_zero_only.rank == 0  # under DDP every process runs this; one reports
    if not rank_zero:
        echo = _silent
    config.logdir = Path(config.logdir)
    threads = config.threads or default_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _compare(config, echo, threads, rank_zero)
    finally:
        torch.set_num_threads(previous_threads)


def _compare(
    config: CompareConfig, echo: Callable[[str], None], threads: int, rank_zero: bool
) -> list[RecipeResult]:
    datamodule = make_datamodule(config)
    try:
        datamodule.prepare_data()
        datamodule.setup("fit")
    except DatasetUnavailableError as exc:
        raise CompareError(f"--data: {_one_line(exc)}") from exc
    log = ComparisonLog(config.logdir)
    settings = experiment_settings(config)
    if rank_zero:  # only once the data is known to be usable
        log.create(settings, RECIPES)
    done = log.completed(RECIPES)
    todo = [name for name in config.recipes if config.force or name not in done]
    kept = [name for name in config.recipes if name not in todo]
    precision = config.precision or default_precision()
    epochs = f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}"
    echo(
        f"Comparing {', '.join(config.recipes)} on {config.data} ({datamodule.num_classes} "
        f"classes), {config.arch} from scratch, {epochs}, precision {precision}, seed "
        f"{config.seed}, {threads} torch thread{'s' if threads != 1 else ''}; logs in "
        f"{config.logdir}"
    )
    if kept:
        echo(
            f"Kept from an earlier run in {config.logdir}: {', '.join(kept)} "
            "(--force trains them again)"
        )
    show_bars = config.progress_bar and sys.stdout.isatty()
    stopped: Interrupted | None = None
    failure: CompareError | None = None
    current = None
    with quiet_lightning_logs(), stop_on_signals() as stop:
        run = _Run(
            config,
            log,
            datamodule,
            initial_weights(config, datamodule.num_classes),
            stop,
            echo,
            show_bars,
            rank_zero,
        )
        try:
            for name in todo:
                stop.raise_if_requested()
                current = name
                result = _train(run, RECIPES[name])
                if rank_zero:
                    log.commit(result)
                done[name] = result
                current = None
        except Interrupted as exc:
            stopped = exc
        except SIGTERMException:  # Lightning's own SIGTERM handling stopped the fit first
            stopped = Interrupted(stop.signum or signal.SIGTERM)
        except DatasetUnavailableError as exc:  # e.g. an image that fails to decode
            failure = CompareError(f"--data: {_one_line(exc)}")
    results = [done[name] for name in RECIPES if name in done]
    csv_path, losses_path, accuracy_path = (
        config.logdir / name for name in ("summary.csv", "losses.png", "accuracy.png")
    )
    if rank_zero and results:
        write_csv(results, csv_path)
        plot_losses(results, losses_path)
        plot_accuracy(results, accuracy_path)
    if failure is not None:
        raise failure
    if stopped is not None:  # (under DDP, one process says what happened)
        message = _stopped_message(config, stopped, current, done) if rank_zero else ""
        raise CompareInterrupted(message, stopped.signum)
    echo("\nSummary (the last column is the chapter's published Imagenette figure, a reference")
    echo("for Imagenette only, not an expectation for other data; wall is clock time, cpu the")
    echo("CPU time of this process, all threads):")
    echo(summary_table(results))
    echo(f"\nWrote {csv_path}, {losses_path} and {accuracy_path}.")
    echo(
        f"TensorBoard runs, one per recipe, are in {config.logdir}; open them with: "
        f"tensorboard --logdir {config.logdir}"
    )
    return [done[name] for name in config.recipes]


def _stopped_message(
    config: CompareConfig, stopped: Interrupted, current: str | None, done: dict[str, Any]
) -> str:
    name = signal.Signals(stopped.signum).name
    finished = [n for n in RECIPES if n in done]
    missing = [n for n in config.recipes if n not in done]
    where = f" during {current}" if current else ""
    if finished:
        saved = f"finished {', '.join(finished)} (summary in {config.logdir / 'summary.csv'})"
    else:
        saved = "no recipe had finished"
    return (
        f"stopped by {name}{where}; {saved}; to train {', '.join(missing)}, run the command "
        f"again with --logdir {config.logdir}"
    )
