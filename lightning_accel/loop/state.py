"""`Learner`: the training state every callback reads, and the callbacks attached to it.

As in the chapter, the learner holds the callbacks (`add_cbs`, `remove_cbs`, `added_cbs`) and
emits events to them (`learn("before_fit")`); a driver (the Lightning adapter) keeps the state
up to date and moves through the loop's nesting (`loop/nesting.py`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any, NamedTuple

from .callback import (
    Callback,
    check_constraints,
    check_event_names,
    sort_callbacks,
    unique_state_keys,
    unmatched_constraints,
)
from .dispatch import Dispatcher

__all__ = ["Learner", "DataLoaders"]

# The counters a checkpoint keeps (TrainEvalCallback advances them; the rest is set per batch).
_CHECKPOINTED = ("train_iter", "pct_train", "epoch")


class DataLoaders(NamedTuple):
    """The fit's loaders, as the chapter's `learn.dls.train` / `learn.dls.valid`."""

    train: Any
    valid: Any


class Learner:
    """The chapter's learner state, without the loop: a driver moves the loop and sets the state.

    Every attribute of the chapter is here (`model, opt, loss_func, dls, dl, xb, yb, pred, loss,
    epoch, n_epoch, iter, n_iter, train_iter, pct_train, training, smooth_loss, cbs`, ...), and
    each callback is reachable by its `name` (`learn.recorder`).
    """

    def __init__(self) -> None:
        self._dispatcher = Dispatcher()
        self._cbs: list[Callback] = []  # in the order they were attached
        self._sorted = True
        self._created: set[int] = set()
        self.model: Any = None
        self.loss_func: Any = None
        self.opt_func: Any = None
        self.opt: Any = None
        self.metrics: Any = None
        self.trainer: Any = None
        self.pl_module: Any = None
        self.dls: DataLoaders | None = None
        self.dl: Any = None
        self.xb: tuple = ()
        self.yb: tuple = ()
        self.pred: Any = None
        self.loss: Any = None
        self.epoch: int = 0
        self.n_epoch: int = 1
        self.iter: int = 0
        self.n_iter: int = 0
        self.train_iter: int = 0
        self.pct_train: float = 0.0
        self.training: bool = False
        self.smooth_loss: Any = None

    # ------------------------------------------------------------------ callbacks
    @property
    def cbs(self) -> list[Callback]:
        """The callbacks in run order: run_before/run_after, then `order`, then insertion."""
        if not self._sorted:
            self._dispatcher.set_callbacks(sort_callbacks(self._cbs))
            self._sorted = True
        return list(self._dispatcher.cbs)

    def __call__(self, event_name: str) -> None:
        """Emit `event_name` to every callback, in order (Cancel exceptions propagate)."""
        if not self._sorted:
            _ = self.cbs
        self._dispatcher.emit(event_name, self.training)

    def add_cbs(self, *cbs: Callback | type) -> Learner:
        """Attach callbacks (instances, or classes to instantiate with no arguments).

        All are checked first (type, ordering constraints): on error nothing is attached.
        Each meets the model (`after_create`) now if the learner has one, else when it gets one.
        """
        new = [cb() if isinstance(cb, type) else cb for cb in cbs]
        for cb in new:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"cbs must be instances (or classes) of lightning_accel Callback, "
                    f"got {type(cb).__name__}; use Trainer(callbacks=...) for Lightning callbacks"
                )
            check_constraints(cb)
        sort_callbacks([*self._cbs, *new])  # a cycle raises here, before anything changes
        for cb in new:
            check_event_names(cb)
            cb.learn = self
            self._cbs.append(cb)
        self._sorted = False
        self.create_callbacks()
        return self

    def remove_cbs(self, *cbs: Callback | type) -> Learner:
        """Detach callbacks (instances, or every callback of a given class)."""
        for cb in cbs:
            if isinstance(cb, type):
                gone = [c for c in self._cbs if isinstance(c, cb)]
            else:
                gone = [c for c in self._cbs if c is cb]
            for c in gone:
                self._cbs.remove(c)
                self._created.discard(id(c))
                c.learn = None
        self._sorted = False
        return self

    @contextlib.contextmanager
    def added_cbs(self, *cbs: Callback | type) -> Iterator[Learner]:
        """Attach callbacks for the duration of a `with` block (a fit), then detach them."""
        new = [cb() if isinstance(cb, type) else cb for cb in cbs]
        self.add_cbs(*new)
        try:
            yield self
        finally:
            self.remove_cbs(*new)  # these instances only, not others of the same class

    def callback_named(self, name: str) -> Callback | None:
        """The first attached callback whose `name` is `name`, if any."""
        for cb in self._cbs:
            if cb.name == name:
                return cb
        return None

    def create_callbacks(self) -> None:
        """Emit `after_create` to each callback that has not met the model yet (if there is one)."""
        if self.model is None:
            return
        for cb in self._cbs:
            if id(cb) not in self._created:
                self._created.add(id(cb))
                cb("after_create")

    def sort_cbs(self) -> None:
        """Sort the callbacks now (once per fit), warning about constraints that match nothing."""
        self._sorted = False
        _ = self.cbs
        for line in unmatched_constraints(self._cbs):
            warnings.warn(
                f"{line} names no attached callback, so it orders nothing; attach that callback "
                "or remove the constraint",
                UserWarning,
                stacklevel=3,
            )

    def state_keys(self) -> dict[str, Callback]:
        """Every callback under a checkpoint key of its own (see `Callback.state_key`)."""
        return unique_state_keys(self._cbs)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The counters a resumed fit needs, and each stateful callback's state by its key.

        A callback is stateful when its class defines `state_dict` (looked up on the class: on
        the instance, an undefined name would fall through to the learner's own).
        """
        return {
            "learn": {k: getattr(self, k) for k in _CHECKPOINTED},
            "cbs": {
                key: cb.state_dict()
                for key, cb in self.state_keys().items()
                if callable(
                    getattr(type(cb), "state_dict", None)
                )  # not the learner's, by fallthrough
            },
        }

    def load_state_dict(self, state: dict[str, Any], by_name: bool = False) -> None:
        """Restore `state_dict()`'s output; entries for callbacks not attached are ignored.

        `by_name`: the callbacks are keyed by `name` (checkpoints of version 1).
        """
        for key, value in state.get("learn", {}).items():
            setattr(self, key, value)
        keyed = self.state_keys()
        for key, cb_state in state.get("cbs", {}).items():
            cb = self.callback_named(key) if by_name else keyed.get(key)
            if cb is not None and callable(getattr(type(cb), "load_state_dict", None)):
                cb.load_state_dict(cb_state)

    # ------------------------------------------------------------------ state
    @property
    def x(self) -> Any:
        """The input, de-tuplified: `xb[0]` when there is one input."""
        return self.xb[0] if len(self.xb) == 1 else self.xb

    @property
    def y(self) -> Any:
        """The target, de-tuplified: `yb[0]` when there is one target."""
        return self.yb[0] if len(self.yb) == 1 else self.yb

    def has_state(self, name: str) -> bool:
        """Whether `name` is a learner attribute (used by the shadowing warning)."""
        return name in vars(self) or hasattr(type(self), name)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not set above: callbacks by name, `learn.recorder`.
        if not name.startswith("_"):
            cb = self.callback_named(name)
            if cb is not None:
                return cb
        raise AttributeError(f"the learner has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"Learner(model={type(self.model).__name__}, cbs={self.cbs})"
