"""The settings of `lightning-accel compare`: what they mean, how they are checked, and which of
them decide the numbers (so that one logdir holds one experiment)."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torchvision

from ..vision.imagenette import class_folders, default_num_workers
from .errors import CompareError
from .logdir import ComparisonLog
from .recipes import RECIPES

NAMED_DATA = {
    "digits": None,
    "imagenette-160": ("imagenette", "160"),
    "imagenette-320": ("imagenette", "320"),
    "imagenette": ("imagenette", "full"),
    "imagewoof-160": ("imagewoof", "160"),
    "imagewoof-320": ("imagewoof", "320"),
    "imagewoof": ("imagewoof", "full"),
}

# Lightning's shorthand precisions and the names they stand for.
PRECISION_ALIASES = {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true", "64": "64-true"}


def default_threads() -> int:
    """Half the CPUs this process may use, at least one.

    torch's default (a thread per core) is fastest on an idle machine, but as soon as another
    process keeps a core busy its threads wait for each other at every parallel operation: on a
    2-core machine the default comparison ran 6-8 times slower beside one busy process, while one
    thread can be at most twice as slow as two on an idle one (docs/benchmarks.md).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS and Windows
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


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
    monitor_every: int | None = None  # None: the monitor's defaults; 0: no monitor
    force: bool = False
    extra_trainer_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def resolved_batch_size(self) -> int:
        return self.batch_size or (64 if self.data == "digits" else 128)

    @property
    def resolved_size(self) -> int:
        return self.size or (32 if self.data == "digits" else 128)

    def validate(self) -> None:
        """Check every setting without writing anything; a `CompareError` names the first bad one.

        Sets `precision` to the name of what will actually run (`32` becomes `32-true`).
        """
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
        if self.monitor_every is not None and self.monitor_every < 0:
            raise CompareError(f"--monitor-every must be 0 (off) or more, got {self.monitor_every}")
        if self.data not in NAMED_DATA:
            _check_data_folder(Path(self.data))
        if self.data != "digits" and self.resolved_size > self.presize:
            raise CompareError(f"--size ({self.size}) must not exceed --presize ({self.presize})")
        if self.arch not in torchvision.models.list_models(module=torchvision.models):
            raise CompareError(
                f"--arch: {self.arch!r} is not a torchvision classification model "
                "(e.g. resnet18, resnet34, resnet50)"
            )
        self.precision = self._check_trainer_settings()
        log = ComparisonLog(Path(self.logdir))
        log.check_writable()
        log.check_settings(experiment_settings(self), RECIPES)

    def _check_trainer_settings(self) -> str:
        # Building a Trainer is how Lightning checks accelerator, devices and precision; doing it
        # up front turns a bad value into a one-line error before any data is touched.
        asked = self.precision or default_precision()
        wanted = PRECISION_ALIASES.get(str(asked), str(asked))
        try:
            with quiet_lightning_logs(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # what they say is reported below, once
                trainer = pl.Trainer(
                    accelerator=self.accelerator,
                    devices=self.devices,
                    precision=wanted,
                    logger=False,
                    enable_checkpointing=False,
                    enable_progress_bar=False,
                    enable_model_summary=False,
                )
        except Exception as exc:  # any failure here is a setting this machine cannot run
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise CompareError(
                f"--accelerator {self.accelerator} / --devices {self.devices} / --precision "
                f"{asked}: {first_line}"
            ) from exc
        runs = str(trainer.precision)
        if runs != wanted:  # Lightning substitutes, e.g. bf16-mixed for 16-mixed on a CPU
            device = type(trainer.accelerator).__name__.removesuffix("Accelerator").lower()
            raise CompareError(
                f"--precision {asked}: the {device} accelerator cannot run {wanted} (Lightning "
                f"would run {runs} instead); choose {runs} or 32-true"
            )
        return wanted


def _check_data_folder(path: Path) -> None:
    if not path.exists():
        raise CompareError(
            f"--data: {str(path)!r} is neither one of {', '.join(NAMED_DATA)} nor a folder "
            "with train/ and val/ class folders"
        )
    if not path.is_dir():
        raise CompareError(f"--data: {path} is a file, not a folder with train/ and val/")
    for split in ("train", "val"):
        if not (path / split).is_dir() or not class_folders(path / split):
            raise CompareError(
                f"--data: {path} has no {split}/ folder of class folders (expected "
                f"{path / split}/<class>/<image files>)"
            )


def experiment_settings(config: CompareConfig) -> dict[str, Any]:
    """The settings that decide a recipe's numbers: one logdir holds runs made with one set.

    Settings that change only speed or output (threads, channels_last, the monitor, the
    progress display, lr_find) are left out; so are loader workers for digits, which only read
    from memory (for image folders they draw the random crops, so they count).
    """
    folder = config.data not in NAMED_DATA
    settings: dict[str, Any] = {
        "--data": str(Path(config.data).resolve()) if folder else config.data,
        "--epochs": config.epochs,
        "--batch-size": config.resolved_batch_size,
        "--size": config.resolved_size,
        "--arch": config.arch,
        "--precision": config.precision or default_precision(),
        "--accelerator": config.accelerator,
        "--devices": config.devices,
        "--seed": config.seed,
        "--limit-batches": config.limit_batches,
    }
    if config.data != "digits":
        settings["--presize"] = config.presize
        workers = config.num_workers
        settings["--num-workers"] = default_num_workers() if workers is None else workers
    return settings


@contextlib.contextmanager
def quiet_lightning_logs() -> Iterator[None]:
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
