"""The one dispatcher: which callbacks run for an event, in what order, and errors named.

`Callback.__call__` is `call_callback` below, and `Dispatcher.emit` runs its callbacks through
the same `run_handler`, so a callback called alone and a callback called by the loop behave alike:
`run`, `run_train`/`run_valid` gate it, a Cancel exception passes through untouched, any other
exception keeps its type and traceback and gains the callback's class and the event in its
message. `emit` runs some fifty times per batch: it only visits the callbacks that define the
event, from a table built once per event and callback list.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from .events import INNER_EVENTS, CancelException

__all__ = ["Dispatcher", "call_callback", "run_handler", "name_origin"]


def name_origin(exc: BaseException, cls_name: str, event_name: str) -> None:
    """Prefix the exception's message with the callback and event; type and traceback stay."""
    if getattr(exc, "_accel_named", False):
        return
    prefix = f"Exception in callback `{cls_name}` during event `{event_name}`"
    if exc.args and isinstance(exc.args[0], str):
        exc.args = (f"{prefix}: {exc.args[0]}", *exc.args[1:])
    else:
        exc.args = (f"{prefix}: {exc!r}", *exc.args)
    with contextlib.suppress(AttributeError):  # exceptions with __slots__
        exc._accel_named = True


def run_handler(
    cb: Any, method: Callable[[Any], Any], event_name: str, gated: bool, training: bool
) -> Any:
    """Call `method(cb)` unless `cb` is switched off (for batch events: off in this phase)."""
    if not cb.run or (gated and not (cb.run_train if training else cb.run_valid)):
        return None
    try:
        return method(cb)
    except CancelException:
        raise
    except Exception as exc:
        name_origin(exc, type(cb).__name__, event_name)
        raise


def call_callback(cb: Any, event_name: str) -> Any:
    """Run the callback's method for `event_name`, if any, honouring `run`/`run_train`/`run_valid`.

    After `after_fit` the callback is switched on again: `self.run = False` lasts one fit, as in
    the reference.
    """
    result = None
    method = getattr(type(cb), event_name, None)
    if method is not None:
        learn = cb.learn
        training = getattr(learn, "training", True) if learn is not None else True
        result = run_handler(cb, method, event_name, event_name in INNER_EVENTS, training)
    if event_name == "after_fit":
        cb.run = True
    return result


class Dispatcher:
    """Emits events to callbacks in a fixed order (the caller sorts them)."""

    def __init__(self) -> None:
        self._cbs: tuple[Any, ...] = ()
        self._handlers: dict[str, list[tuple[Any, Any]]] = {}

    @property
    def cbs(self) -> tuple[Any, ...]:
        """The callbacks, in the order they run."""
        return self._cbs

    def set_callbacks(self, cbs: Sequence[Any]) -> None:
        """Use `cbs`, in this order, from the next event on."""
        self._cbs = tuple(cbs)
        self._handlers = {}

    def emit(self, event_name: str, training: bool) -> None:
        """Run `event_name` on every callback that defines it; Cancel exceptions propagate."""
        handlers = self._handlers.get(event_name)
        if handlers is None:
            handlers = self._handlers_for(event_name)
        gated = event_name in INNER_EVENTS
        for cb, method in handlers:
            if method is None:  # a callback with its own __call__ keeps its own dispatch
                cb(event_name)
            else:
                run_handler(cb, method, event_name, gated, training)
        if event_name == "after_fit":
            for cb in self._cbs:  # a callback switched off for this fit is on again
                cb.run = True

    def _handlers_for(self, event_name: str) -> list[tuple[Any, Any]]:
        handlers = []
        for cb in self._cbs:
            klass = type(cb)
            if klass.__call__ is not call_callback:
                handlers.append((cb, None))
            else:
                method = getattr(klass, event_name, None)
                if method is not None:
                    handlers.append((cb, method))
        self._handlers[event_name] = handlers
        return handlers
