"""The chapter's training-loop events and the Cancel exceptions that steer the loop."""

from __future__ import annotations

__all__ = [
    "EVENTS",
    "CANCEL_EVENTS",
    "PARTS",
    "CANCELS",
    "cancelled_part",
    "event",
    "CancelException",
    "CancelBatchException",
    "CancelBackwardException",
    "CancelStepException",
    "CancelTrainException",
    "CancelValidException",
    "CancelEpochException",
    "CancelFitException",
]

# In the order the chapter lists them; the loop emits them in this nesting.
EVENTS: tuple[str, ...] = (
    "after_create",
    "before_fit",
    "before_epoch",
    "before_train",
    "before_batch",
    "after_pred",
    "after_loss",
    "before_backward",
    "after_backward",
    "before_step",
    "after_step",
    "after_batch",
    "after_train",
    "before_validate",
    "after_validate",
    "after_epoch",
    "after_fit",
)

CANCEL_EVENTS: tuple[str, ...] = (
    "after_cancel_batch",
    "after_cancel_backward",
    "after_cancel_step",
    "after_cancel_train",
    "after_cancel_validate",
    "after_cancel_epoch",
    "after_cancel_fit",
)

# Events that happen once per batch: `run_train`/`run_valid` gate only these.
INNER_EVENTS: frozenset[str] = frozenset(
    {
        "before_batch",
        "after_pred",
        "after_loss",
        "before_backward",
        "after_backward",
        "before_step",
        "after_step",
        "after_batch",
        "after_cancel_batch",
        "after_cancel_backward",
        "after_cancel_step",
    }
)

ALL_EVENTS: tuple[str, ...] = EVENTS + CANCEL_EVENTS


class _EventNamespace:
    """Every event name as an attribute (`event.after_loss == "after_loss"`), for tab completion."""

    __slots__ = ()

    def __dir__(self) -> list[str]:
        return list(ALL_EVENTS)

    def __iter__(self):
        return iter(ALL_EVENTS)

    def __repr__(self) -> str:
        return f"event({', '.join(ALL_EVENTS)})"


for _name in ALL_EVENTS:
    setattr(_EventNamespace, _name, _name)

event = _EventNamespace()


class CancelException(Exception):
    """Base of the control-flow exceptions; the loop catches them, they are never errors."""


class CancelBatchException(CancelException):
    """Skip the rest of this batch (the optimizer step included) and go to `after_batch`."""


class CancelBackwardException(CancelException):
    """Skip the backward pass (raised in `before_backward`) and go to `after_backward`."""


class CancelStepException(CancelException):
    """Skip the optimizer step (raised in `before_step`) and go to `after_step`."""


class CancelTrainException(CancelException):
    """Skip the rest of the training phase of the epoch and go to `after_train`."""


class CancelValidException(CancelException):
    """Skip the rest of the validation phase of the epoch and go to `after_validate`."""


class CancelEpochException(CancelException):
    """Skip the rest of this epoch, validation included, and go to `after_epoch`."""


class CancelFitException(CancelException):
    """Stop the fit and go to `after_fit`; `trainer.fit` returns normally."""


# The parts of the chapter's loop, outermost first: each is `before_<part>`, its body, and
# `after_<part>`, with `after_cancel_<part>` in between when its own exception cancels it.
PARTS: tuple[str, ...] = ("fit", "epoch", "train", "validate", "batch", "backward", "step")

# The one table of what each Cancel exception cancels (its events are `after_cancel_<part>` and
# `after_<part>`): the loop core (`loop/nesting.py`) and the docs read it.
CANCELS: dict[type[CancelException], str] = {
    CancelBatchException: "batch",
    CancelBackwardException: "backward",
    CancelStepException: "step",
    CancelTrainException: "train",
    CancelValidException: "validate",
    CancelEpochException: "epoch",
    CancelFitException: "fit",
}


def cancelled_part(exc: CancelException) -> str:
    """The part of the loop `exc` cancels (a subclass cancels what its base cancels)."""
    part = CANCELS.get(type(exc))
    if part is None:
        for klass, name in CANCELS.items():
            if isinstance(exc, klass):
                return name
        raise TypeError(
            f"{type(exc).__name__} is a CancelException but none of the seven the loop knows "
            f"({', '.join(k.__name__ for k in CANCELS)}); subclass one of those"
        )
    return part
