"""Shared pieces of the callback tests: tiny data, an event log, a reference model of the loop."""

from __future__ import annotations

from dataclasses import dataclass, field

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_accel import Callback
from lightning_accel.loop.events import (
    ALL_EVENTS,
    CancelBackwardException,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CancelStepException,
    CancelTrainException,
    CancelValidException,
)

BS = 4


def loaders(n_train: int, n_valid: int, seed: int = 0) -> tuple[DataLoader, DataLoader | None]:
    """`n_train` training and `n_valid` validation batches of a linear-regression problem."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n_train + n_valid) * BS, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(len(x), 1, generator=g)
    train = TensorDataset(x[: n_train * BS], y[: n_train * BS])
    valid = TensorDataset(x[n_train * BS :], y[n_train * BS :])
    return (
        DataLoader(train, batch_size=BS),
        DataLoader(valid, batch_size=BS) if n_valid else None,
    )


def make_trainer(tmp_path, **kwargs) -> pl.Trainer:
    opts = dict(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=2,
    )
    opts.update(kwargs)
    return pl.Trainer(**opts)


class EventLog(Callback):
    """Records every event it sees; raises `exc` at the `at`-th occurrence of event `when`."""

    order = -100  # first, so a raise happens before any other callback sees the event

    def __init__(self, exc: type | None = None, when: str | None = None, at: int = 0) -> None:
        self.seq: list[str] = []
        self.exc, self.when, self.at = exc, when, at
        self.snapshots: list[dict] = []
        self._seen = 0

    def _record(self, name: str) -> None:
        self.seq.append(name)
        self.snapshots.append(self._snapshot(name))
        if name == self.when:
            if self._seen == self.at:
                self._seen += 1
                raise self.exc()
            self._seen += 1

    def _snapshot(self, name: str) -> dict:
        learn = self.learn
        return {
            "event": name,
            "training": learn.training,
            "epoch": learn.epoch,
            "iter": learn.iter,
            "n_iter": learn.n_iter,
            "train_iter": learn.train_iter,
            "pct_train": learn.pct_train,
            "dl": learn.dl,
        }


for _event in ALL_EVENTS:
    if _event != "after_create":
        setattr(EventLog, _event, (lambda n: lambda self: self._record(n))(_event))


# ---------------------------------------------------------------------- the chapter's loop
CANCELS = {
    "batch": CancelBatchException,
    "backward": CancelBackwardException,
    "step": CancelStepException,
    "train": CancelTrainException,
    "validate": CancelValidException,
    "epoch": CancelEpochException,
    "fit": CancelFitException,
}


class Escaped(Exception):
    """A Cancel exception that no part of the loop catches: the chapter's loop would crash."""


@dataclass
class Reference:
    """The chapter's loop (the reference Learner's nesting of try blocks), without any model.

    It records the events it emits and, for each training batch, whether the backward and the
    optimizer step ran: the expected behaviour the bridge is checked against.
    """

    n_epoch: int
    n_train: int
    n_valid: int | None
    accumulate: int = 1
    exc: type | None = None
    when: str | None = None
    at: int = 0
    seq: list[str] = field(default_factory=list)
    steps: list[tuple[int, int, bool, bool]] = field(default_factory=list)  # epoch, iter, bwd, step

    def run(self) -> Reference:
        self._seen = 0
        try:
            self._with_events(self._fit, "fit", CancelFitException)
        except (
            CancelBatchException,
            CancelBackwardException,
            CancelStepException,
            CancelTrainException,
            CancelValidException,
            CancelEpochException,
            CancelFitException,
        ) as exc:
            raise Escaped(type(exc).__name__) from exc
        return self

    def _emit(self, name: str) -> None:
        self.seq.append(name)
        if name == self.when:
            if self._seen == self.at:
                self._seen += 1
                raise self.exc()
            self._seen += 1

    def _with_events(self, body, kind: str, exc: type) -> None:
        try:
            self._emit(f"before_{kind}")
            body()
        except exc:
            self._emit(f"after_cancel_{kind}")
        self._emit(f"after_{kind}")

    def _fit(self) -> None:
        for epoch in range(self.n_epoch):
            self.epoch = epoch
            self._with_events(self._epoch, "epoch", CancelEpochException)

    def _epoch(self) -> None:
        self._with_events(lambda: self._batches(True), "train", CancelTrainException)
        if self.n_valid is not None:
            self._with_events(lambda: self._batches(False), "validate", CancelValidException)

    def _batches(self, training: bool) -> None:
        for i in range(self.n_train if training else self.n_valid):
            self._with_events(lambda i=i: self._batch(training, i), "batch", CancelBatchException)

    def _batch(self, training: bool, i: int) -> None:
        self._emit("after_pred")
        self._emit("after_loss")
        if not training:
            return
        record = [self.epoch, i, False, False]
        self.steps.append(record)
        self._with_events(lambda: record.__setitem__(2, True), "backward", CancelBackwardException)
        # Lightning steps at the end of each accumulation window and on the last batch.
        if (i + 1) % self.accumulate == 0 or i == self.n_train - 1:
            self._with_events(lambda: record.__setitem__(3, True), "step", CancelStepException)


def count(seq: list[str], name: str) -> int:
    return sum(1 for e in seq if e == name)
