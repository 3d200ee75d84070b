"""The chapter's experiment: five optimizer recipes trained from the same start, side by side.

Each recipe gets a fresh copy of one randomly initialized model, the same data order and the same
augmentation draws (the global seed is reset before each), so the optimizers are the only
difference. `run_compare` is what `lightning-accel compare` runs.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torchvision
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from ..module import AccelModule
from ..monitor.stats_monitor import OptimizerStatsMonitor
from ..schedule.fit import fit, fit_one_cycle
from ..schedule.lr_finder import lr_find
from ..schedule.suggestions import minimum, steep, valley
from ..vision.digits import DigitsDataModule
from ..vision.download import is_image_folder
from ..vision.imagenette import ImagenetteDataModule
from ..vision.models import vision_model, vision_splitter
from .epoch_table import EpochTable
from .recipes import RECIPES, Recipe
from .report import RecipeResult, epoch_table, plot_losses, summary_table, write_csv

NAMED_DATA = {
    "digits": None,
    "imagenette-160": ("imagenette", "160"),
    "imagenette-320": ("imagenette", "320"),
    "imagenette": ("imagenette", "full"),
    "imagewoof-160": ("imagewoof", "160"),
    "imagewoof-320": ("imagewoof", "320"),
    "imagewoof": ("imagewoof", "full"),
}


class CompareError(ValueError):
    """A setting `compare` cannot run with; the message names the option and what it accepts."""


@dataclass
class CompareConfig:
    """The options of `lightning-accel compare`; None means "the default for this data"."""

    data: str = "digits"
    epochs: int = 3
    batch_size: int | None = None
    size: int | None = None
    presize: int = 160
    recipes: tuple[str, ...] = tuple(RECIPES)
    arch: str = "resnet34"
    precision: str | None = None
    accelerator: str = "auto"
    devices: int | str = 1
    seed: int = 0
    logdir: Path = Path("runs/compare")
    num_workers: int | None = None
    limit_batches: int | None = None
    lr_find: bool = True
    lr_find_iters: int = 100
    progress_bar: bool = True
    channels_last: bool = False
    data_dir: Path | None = None
    threads: int | None = None
    monitor_every: int = 10
    extra_trainer_kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        unknown = [name for name in self.recipes if name not in RECIPES]
        if unknown or not self.recipes:
            raise CompareError(
                f"--recipes: unknown {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(RECIPES)}"
            )
        for option, value in (
            ("--epochs", self.epochs),
            ("--batch-size", self.batch_size),
            ("--size", self.size),
            ("--limit-batches", self.limit_batches),
            ("--lr-find-iters", self.lr_find_iters),
            ("--threads", self.threads),
        ):
            if value is not None and value < 1:
                raise CompareError(f"{option} must be a positive integer, got {value}")
        if self.num_workers is not None and self.num_workers < 0:
            raise CompareError(f"--num-workers must be 0 or more, got {self.num_workers}")
        if self.monitor_every < 0:
            raise CompareError(f"--monitor-every must be 0 (off) or more, got {self.monitor_every}")
        if self.data not in NAMED_DATA and not is_image_folder(Path(self.data)):
            raise CompareError(
                f"--data: {self.data!r} is neither one of {', '.join(NAMED_DATA)} nor a folder "
                "with train/ and val/ class folders"
            )
        if self.data != "digits" and (self.size or 128) > self.presize:
            raise CompareError(f"--size ({self.size}) must not exceed --presize ({self.presize})")
        taken = [n for n in self.recipes if list((Path(self.logdir) / n).glob("events.out.*"))]
        if taken:
            raise CompareError(
                f"--logdir: {self.logdir} already holds runs for {', '.join(taken)}; choose a new "
                "folder so TensorBoard does not mix two experiments"
            )
        if self.arch not in torchvision.models.list_models(module=torchvision.models):
            raise CompareError(
                f"--arch: {self.arch!r} is not a torchvision classification model "
                "(e.g. resnet18, resnet34, resnet50)"
            )
        self._check_trainer_settings()

    def _check_trainer_settings(self) -> None:
        # Building a Trainer is how Lightning checks accelerator, devices and precision; doing it
        # up front turns a bad value into a one-line error before any data is touched.
        try:
            with _quiet_lightning():
                pl.Trainer(
                    accelerator=self.accelerator,
                    devices=self.devices,
                    precision=self.precision or default_precision(),
                    logger=False,
                    enable_checkpointing=False,
                    enable_progress_bar=False,
                    enable_model_summary=False,
                )
        except Exception as exc:  # any failure here is a setting this machine cannot run
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise CompareError(
                f"--accelerator {self.accelerator} / --devices {self.devices} / --precision "
                f"{self.precision or default_precision()}: {first_line}"
            ) from exc


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's start-up banner (GPU available, ...) for a probe Trainer."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def default_precision() -> str:
    """Mixed precision on a GPU, as the chapter (bf16 where supported), full precision on CPU."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def make_datamodule(config: CompareConfig) -> pl.LightningDataModule:
    """The data module `config.data` names: digits, an Imagenette variant, or a folder."""
    if config.data == "digits":
        return DigitsDataModule(
            size=config.size or 32,
            batch_size=config.batch_size or 64,
            num_workers=config.num_workers or 0,
            seed=config.seed,
            channels_last=config.channels_last,
        )
    common = dict(
        presize=config.presize,
        size=config.size or 128,
        batch_size=config.batch_size or 128,
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


def _trainer_kwargs(config: CompareConfig, logger: Any) -> dict[str, Any]:
    limit = config.limit_batches
    return dict(
        accelerator=config.accelerator,
        devices=config.devices,
        precision=config.precision or default_precision(),
        logger=logger,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=config.progress_bar,
        num_sanity_val_steps=0,
        limit_train_batches=limit,
        limit_val_batches=limit,
        default_root_dir=config.logdir,
        log_every_n_steps=1,
        **config.extra_trainer_kwargs,
    )


def _module(recipe: Recipe, model: nn.Module) -> AccelModule:
    module = AccelModule(
        model,
        nn.CrossEntropyLoss(),
        opt_func=recipe.opt_func,
        lr=recipe.lr,
        splitter=vision_splitter,
    )
    # The bridge's Recorder would print its own table; compare prints the chapter's (EpochTable).
    recorder = module.bridge.callback_named("recorder")
    if recorder is not None:
        recorder.print_table = False
    return module


def _monitor(recipe: Recipe, config: CompareConfig) -> OptimizerStatsMonitor:
    """The optimizer's internals for TensorBoard, and the recipe in the HParams tab."""
    return OptimizerStatsMonitor(
        log_every_n_steps=config.monitor_every,
        histogram_every_n_steps=10 * config.monitor_every,
        hparams={"recipe": recipe.name, "lr": recipe.lr, "data": config.data, "seed": config.seed},
    )


def run_recipe(
    recipe: Recipe,
    config: CompareConfig,
    datamodule: pl.LightningDataModule,
    weights: dict[str, torch.Tensor],
) -> RecipeResult:
    """Train a fresh copy of `weights` with `recipe` and return its table and loss curve."""
    model = _fresh_model(config, datamodule.num_classes, weights)
    module = _module(recipe, model)
    table = EpochTable()
    logger = TensorBoardLogger(config.logdir, name=recipe.name, version="", default_hp_metric=False)
    kwargs = _trainer_kwargs(config, logger)
    cbs: list[Any] = [table]
    if config.monitor_every:
        cbs.append(_monitor(recipe, config))
    pl.seed_everything(config.seed, verbose=False)  # same augmentation and dropout draws
    start = time.perf_counter()
    if recipe.one_cycle:
        moms = {} if recipe.moms is None else {"moms": recipe.moms}
        fit_one_cycle(
            module, config.epochs, recipe.lr, datamodule=datamodule, cbs=cbs, **moms, **kwargs
        )
    else:
        fit(module, config.epochs, recipe.lr, datamodule=datamodule, cbs=cbs, **kwargs)
    seconds = time.perf_counter() - start
    logger.finalize("success")
    return RecipeResult(
        name=recipe.name,
        description=recipe.description(config.epochs),
        reference_accuracy=recipe.reference_accuracy,
        rows=table.rows,
        train_losses=table.step_losses,
        seconds=seconds,
    )


def run_lr_find(
    config: CompareConfig, datamodule: pl.LightningDataModule, weights: dict[str, torch.Tensor]
) -> tuple:
    """The chapter's `lr_find` for plain SGD, from the shared initial weights; plot saved."""
    model = _fresh_model(config, datamodule.num_classes, weights)
    module = _module(RECIPES["sgd"], model)
    kwargs = _trainer_kwargs(config, logger=False)
    for key in ("logger", "limit_val_batches", "num_sanity_val_steps", "enable_checkpointing"):
        kwargs.pop(key)
    kwargs["enable_progress_bar"] = False
    pl.seed_everything(config.seed, verbose=False)
    return lr_find(
        module,
        datamodule=datamodule,
        num_it=config.lr_find_iters,
        suggest_funcs=(valley, minimum, steep),
        show_plot=False,
        plot_path=config.logdir / "lr_find_sgd.png",
        **kwargs,
    )


def _silent(text: str) -> None:
    pass


def _run_one(
    recipe: Recipe,
    config: CompareConfig,
    datamodule: pl.LightningDataModule,
    weights: dict[str, torch.Tensor],
    echo: Callable[[str], None],
) -> RecipeResult:
    if recipe.name == "sgd" and config.lr_find:
        suggestions = run_lr_find(config, datamodule, weights)
        shown = ", ".join(f"{k}={v:.3g}" for k, v in suggestions._asdict().items())
        echo(f"\nlr_find (SGD): {shown}  [plot: {config.logdir / 'lr_find_sgd.png'}]")
    echo(f"\n{recipe.name}: {recipe.description(config.epochs)}")
    result = run_recipe(recipe, config, datamodule, weights)
    echo(epoch_table(result.rows))
    return result


def run_compare(config: CompareConfig, echo: Callable[[str], None] = print) -> list[RecipeResult]:
    """Run every recipe of `config`, print the tables, write the CSV, the plot and the runs."""
    config.validate()
    if rank_zero_only.rank != 0:  # under DDP every process runs this; one of them reports
        echo = _silent
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    config.logdir = Path(config.logdir)
    datamodule = make_datamodule(config)
    datamodule.prepare_data()
    datamodule.setup("fit")
    config.logdir.mkdir(parents=True, exist_ok=True)  # only once the data is known to be usable
    weights = initial_weights(config, datamodule.num_classes)
    precision = config.precision or default_precision()
    epochs = f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}"
    echo(
        f"Comparing {', '.join(config.recipes)} on {config.data} ({datamodule.num_classes} "
        f"classes), {config.arch} from scratch, {epochs}, precision {precision}, "
        f"seed {config.seed}; logs in {config.logdir}"
    )
    results = []
    with _quiet_lightning():
        for name in config.recipes:
            results.append(_run_one(RECIPES[name], config, datamodule, weights, echo))
    if rank_zero_only.rank != 0:
        return results
    csv_path = write_csv(results, config.logdir / "summary.csv")
    png_path = plot_losses(results, config.logdir / "losses.png")
    echo("\nSummary (the last column is the chapter's published Imagenette figure, a reference")
    echo("for Imagenette only, not an expectation for other data):")
    echo(summary_table(results))
    echo(
        f"\nWrote {csv_path}, {png_path} and one TensorBoard run per recipe: "
        f"tensorboard --logdir {config.logdir}"
    )
    return results
