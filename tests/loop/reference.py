"""An independent model of the chapter's loop, and callbacks that record and raise.

`Reference` is the reference Learner's nesting of `try` blocks, written out without any model:
each part is `before_X`, its body, `after_cancel_X` on its own exception, `after_X`. It records
the events it emits and, for each training batch, whether the backward pass and the optimizer
step ran. The loop core and the Lightning bridge are checked against it; it shares no code with
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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

CANCELS = {
    "batch": CancelBatchException,
    "backward": CancelBackwardException,
    "step": CancelStepException,
    "train": CancelTrainException,
    "validate": CancelValidException,
    "epoch": CancelEpochException,
    "fit": CancelFitException,
}
ALL_CANCELS = tuple(CANCELS.values())

# A plan of raises: (event, occurrence of that event counted from 0, exception class).
Plan = Sequence[tuple[str, int, type]]


class Escaped(Exception):
    """A Cancel exception that no part of the loop catches: the chapter's loop would crash."""


class Raiser:
    """Counts the events it is shown and raises as the plan says."""

    def __init__(self, plan: Plan = ()) -> None:
        self.plan = list(plan)
        self.counts: dict[str, int] = {}
        self.seq: list[str] = []

    def __call__(self, name: str) -> None:
        self.seq.append(name)
        seen = self.counts.get(name, 0)
        self.counts[name] = seen + 1
        for event, at, exc in self.plan:
            if event == name and at == seen:
                raise exc()


@dataclass
class Reference:
    """The chapter's loop for `n_epoch` epochs of `n_train` training and `n_valid` validation
    batches (None: no validation loader); Lightning's optimizer step cadence under
    `accumulate` (every `accumulate` batches and at the epoch's last)."""

    n_epoch: int
    n_train: int
    n_valid: int | None
    accumulate: int = 1
    plan: Plan = ()
    seq: list[str] = field(default_factory=list)
    steps: list[tuple[int, int, bool, bool]] = field(default_factory=list)  # epoch, iter, bwd, step

    @classmethod
    def raising(cls, n_epoch, n_train, n_valid, accumulate=1, exc=None, when=None, at=0):
        plan = [(when, at, exc)] if exc is not None else []
        return cls(n_epoch, n_train, n_valid, accumulate, plan)

    def run(self) -> Reference:
        self._raiser = Raiser(self.plan)
        try:
            self._with_events(self._fit, "fit", CancelFitException)
        except ALL_CANCELS as exc:
            raise Escaped(type(exc).__name__) from exc
        self.seq = self._raiser.seq
        return self

    def _emit(self, name: str) -> None:
        self._raiser(name)

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
        if (i + 1) % self.accumulate == 0 or i == self.n_train - 1:
            self._with_events(lambda: record.__setitem__(3, True), "step", CancelStepException)


def count(seq: list[str], name: str) -> int:
    return sum(1 for e in seq if e == name)


def single_raise_cases(n_epoch: int, n_train: int, n_valid: int | None, accumulate: int = 1):
    """Every Cancel exception from every event the plain loop emits (its second occurrence when
    there is one): `(allowed, refused)` lists of `(kind, event, occurrence)`."""
    plain = Reference(n_epoch, n_train, n_valid, accumulate).run().seq
    allowed, refused = [], []
    for kind, exc in CANCELS.items():
        for when in dict.fromkeys(plain):  # every event, in first-seen order
            at = 1 if count(plain, when) > 1 else 0
            try:
                Reference.raising(n_epoch, n_train, n_valid, accumulate, exc, when, at).run()
            except Escaped:
                refused.append((kind, when, at))
            else:
                allowed.append((kind, when, at))
    return allowed, refused


class EventLog(Callback):
    """Records every event it sees (and a snapshot of the learner); raises as its plan says."""

    order = -100  # first, so a raise happens before any other callback sees the event

    def __init__(self, exc: type | None = None, when: str | None = None, at: int = 0) -> None:
        self.raiser = Raiser([(when, at, exc)] if exc is not None else [])
        self.snapshots: list[dict] = []

    @property
    def seq(self) -> list[str]:
        return self.raiser.seq

    def arm(self, exc: type, when: str, at: int) -> None:
        self.raiser.plan = [(when, at, exc)]

    def _record(self, name: str) -> None:
        learn = self.learn
        self.snapshots.append(
            {
                "event": name,
                "training": learn.training,
                "epoch": learn.epoch,
                "iter": learn.iter,
                "n_iter": learn.n_iter,
                "train_iter": learn.train_iter,
                "pct_train": learn.pct_train,
                "dl": learn.dl,
            }
        )
        self.raiser(name)


for _event in ALL_EVENTS:
    if _event != "after_create":
        setattr(EventLog, _event, (lambda n: lambda self: self._record(n))(_event))
