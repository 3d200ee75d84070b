"""lr_find's progress display: Lightning's tqdm bar on a terminal, a few plain lines otherwise.

The finder's mock training is a single sweep of `num_it` steps (possibly cycling a short loader
over many epochs), so Lightning's default bar, which restarts every epoch and counts loader
batches, would say little; this one counts the sweep's steps and shows the lr and smoothed loss.
When standard output is not a terminal (a log file, a pipe, captured output), redrawing a bar
would write one line per update, so it prints a line at each quarter of the sweep and one when
the finder stops early: at most five lines.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

import lightning.pytorch as pl
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

if TYPE_CHECKING:
    from .lr_finder import LRFinder

__all__ = ["LRFindProgress"]

QUARTERS = 4


class LRFindProgress(ProgressBar):
    """The progress of `finder`'s sweep, written to standard output (rank zero only)."""

    def __init__(self, finder: LRFinder) -> None:
        super().__init__()
        self.finder = finder
        self._enabled = True
        self._bar: Tqdm | None = None
        self._lines_done = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def _stream(self) -> TextIO:
        return sys.stdout  # read at use: pytest's capture and redirect_stdout swap it

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._lines_done = 0
        if self._enabled and self._stream.isatty():
            self._bar = Tqdm(
                total=self.finder.num_it,
                desc="lr_find",
                leave=True,
                dynamic_ncols=True,
                file=self._stream,
                smoothing=0,
                unit="step",
            )

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self._enabled or not self.finder.lrs:
            return
        step, total = len(self.finder.lrs), self.finder.num_it
        lr, loss = self.finder.lrs[-1], self.finder.losses[-1]
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix(lr=f"{lr:.2e}", loss=f"{loss:.4f}", refresh=False)
            self._bar.refresh()
        else:
            quarter = step * QUARTERS // total
            if quarter > self._lines_done:
                self._lines_done = quarter
                self._print(f"lr_find: {step}/{total} steps, lr {lr:.2e}, smoothed loss {loss:.4f}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        reason = self.finder.stop_reason
        if self._enabled and reason is not None:
            self._print(
                f"lr_find: stopped after {len(self.finder.lrs)} of {self.finder.num_it} steps: "
                f"{reason}"
            )

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _print(self, line: str) -> None:
        print(line, file=self._stream, flush=True)
