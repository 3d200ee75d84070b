"""`Callback`, the chapter's callback base, and the rules that order callbacks."""

from __future__ import annotations

import contextlib
import difflib
import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from .events import ALL_EVENTS, INNER_EVENTS, CancelException

__all__ = ["Callback", "sort_callbacks", "check_event_names", "name_origin", "LEARNER_ATTRS"]

# The learner state every callback can read as `self.<name>` (the bridge keeps it up to date).
LEARNER_ATTRS: frozenset[str] = frozenset(
    {
        "model",
        "opt",
        "opt_func",
        "loss_func",
        "trainer",
        "pl_module",
        "dls",
        "dl",
        "xb",
        "yb",
        "x",
        "y",
        "pred",
        "loss",
        "epoch",
        "n_epoch",
        "iter",
        "n_iter",
        "train_iter",
        "pct_train",
        "training",
        "smooth_loss",
        "cbs",
        "metrics",
    }
)

# Attributes of Callback itself; never looked up on the learner.
_OWN_ATTRS = frozenset(
    {"learn", "order", "run", "run_train", "run_valid", "run_before", "run_after", "name"}
)


def _snake_name(cls_name: str) -> str:
    """`TerminateOnNaNCallback` -> `terminate_on_nan`, `Recorder` -> `recorder`."""
    base = cls_name[: -len("Callback")] if cls_name.endswith("Callback") else cls_name
    base = base or cls_name
    # Split before an upper-case letter that starts a word; runs of capitals stay one word,
    # except that a capital followed by lower-case starts a new word ("RNNRegularizer").
    words = re.findall(r"[A-Z]+(?=[A-Z][a-z]|\d|\b|_)|[A-Z]?[a-z]+|[A-Z]+|\d+", base)
    name = "_".join(w.lower() for w in words)
    # "NaN" splits as "na"+"n": keep the common acronym whole.
    return name.replace("na_n", "nan")


class Callback:
    """Base class of the chapter's training-loop callbacks.

    Define a method per event you need (`before_batch`, `after_loss`, ...). Reading an attribute
    the callback lacks falls through to the learner state (`self.model`, `self.loss`); writing
    must go through `self.learn.<name>`.
    """

    order: int = 0
    run_before: Sequence[type | str] | type | str = ()
    run_after: Sequence[type | str] | type | str = ()
    run: bool = True
    run_train: bool = True
    run_valid: bool = True
    learn: Any = None

    @property
    def name(self) -> str:
        """Snake-case class name without the `Callback` suffix: a `Recorder` is `learn.recorder`."""
        return _snake_name(type(self).__name__)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: fall through to the learner state.
        if name.startswith("_") or name in _OWN_ATTRS or name in ALL_EVENTS:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        learn = self.__dict__.get("learn", type(self).learn)
        if learn is None:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r} "
                "(it is not attached to a learner yet)"
            )
        try:
            return getattr(learn, name)
        except AttributeError:
            raise AttributeError(
                f"{type(self).__name__!r} object and its learner have no attribute {name!r}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        own = self.__dict__
        if name in own:  # the common case, once per event in busy callbacks: keep it cheap
            own[name] = value
            return
        if name not in _OWN_ATTRS and not name.startswith("_"):
            learn = self.__dict__.get("learn")
            shadows = name in LEARNER_ATTRS or (learn is not None and _has_state(learn, name))
            if shadows:
                warnings.warn(
                    f"{type(self).__name__} sets `self.{name}`, which shadows the learner's "
                    f"`{name}`; write `self.learn.{name} = ...` to change the learner's value.",
                    stacklevel=2,
                )
        super().__setattr__(name, value)

    def __call__(self, event_name: str) -> Any:
        """Run the method for `event_name`, if any, honouring `run`, `run_train`, `run_valid`."""
        result = None
        if self.run and self._runs_in_phase(event_name):
            method = getattr(type(self), event_name, None)
            if method is not None:
                try:
                    result = method(self)
                except CancelException:
                    raise
                except Exception as exc:
                    name_origin(exc, type(self).__name__, event_name)
                    raise
        if event_name == "after_fit":
            # A callback may switch itself off for one fit (`self.run = False`); the next fit
            # starts with it on again, as in the reference.
            self.run = True
        return result

    def _runs_in_phase(self, event_name: str) -> bool:
        if event_name not in INNER_EVENTS:
            return True
        training = getattr(self.learn, "training", True) if self.learn is not None else True
        return self.run_train if training else self.run_valid

    def __repr__(self) -> str:
        return type(self).__name__


def _has_state(learn: Any, name: str) -> bool:
    has = getattr(learn, "has_state", None)
    return bool(has(name)) if has is not None else hasattr(learn, name)


def name_origin(exc: BaseException, cls_name: str, event_name: str) -> None:
    """Prefix the exception's message with the callback and event; type and traceback stay."""
    prefix = f"Exception in callback `{cls_name}` during event `{event_name}`"
    if getattr(exc, "_accel_named", False):
        return
    if exc.args and isinstance(exc.args[0], str):
        exc.args = (f"{prefix}: {exc.args[0]}", *exc.args[1:])
    else:
        exc.args = (f"{prefix}: {exc!r}", *exc.args)
    with contextlib.suppress(AttributeError):  # exceptions with __slots__
        exc._accel_named = True


def check_event_names(cb: Callback) -> None:
    """Warn about methods of `cb` that look like misspelt events (`befor_batch`)."""
    known = set(ALL_EVENTS)
    for klass in type(cb).__mro__:
        if klass is Callback or klass is object:
            break
        for attr, value in vars(klass).items():
            if attr.startswith("_") or attr in known or not callable(value):
                continue
            if not attr.startswith(("before", "after", "befor", "aftr", "afer", "bfore")):
                close = difflib.get_close_matches(attr, ALL_EVENTS, n=1, cutoff=0.85)
            else:
                close = difflib.get_close_matches(attr, ALL_EVENTS, n=1, cutoff=0.75)
            if close:
                warnings.warn(
                    f"{type(cb).__name__}.{attr} is not an event and will never be called; "
                    f"did you mean `{close[0]}`?",
                    stacklevel=3,
                )


def _as_tuple(spec: Sequence[type | str] | type | str) -> tuple[type | str, ...]:
    if isinstance(spec, (str, type)):
        return (spec,)
    return tuple(spec)


def _matches(cb: Callback, spec: type | str) -> bool:
    if isinstance(spec, type):
        return isinstance(cb, spec)
    return spec in (cb.name, type(cb).__name__)


def sort_callbacks(cbs: Iterable[Callback]) -> list[Callback]:
    """Order callbacks so every `run_before`/`run_after` holds; ties by `order`, then insertion.

    Raises `ValueError` naming the cycle when the constraints contradict each other.
    """
    cbs = list(cbs)
    n = len(cbs)
    after: list[set[int]] = [set() for _ in range(n)]  # after[i]: indices that must follow i
    for i, cb in enumerate(cbs):
        for spec in _as_tuple(cb.run_before):
            after[i].update(j for j, other in enumerate(cbs) if j != i and _matches(other, spec))
        for spec in _as_tuple(cb.run_after):
            for j, other in enumerate(cbs):
                if j != i and _matches(other, spec):
                    after[j].add(i)
    indegree = [0] * n
    for i in range(n):
        for j in after[i]:
            indegree[j] += 1
    # Kahn's algorithm, always taking the ready callback with the smallest (order, insertion).
    ready = [i for i in range(n) if indegree[i] == 0]
    result: list[int] = []
    while ready:
        i = min(ready, key=lambda k: (cbs[k].order, k))
        ready.remove(i)
        result.append(i)
        for j in sorted(after[i]):
            indegree[j] -= 1
            if indegree[j] == 0:
                ready.append(j)
    if len(result) < n:
        cycle = _find_cycle(after, [i for i in range(n) if indegree[i] > 0])
        names = " -> ".join(type(cbs[i]).__name__ for i in cycle)
        raise ValueError(f"run_before/run_after constraints form a cycle: {names}")
    return [cbs[i] for i in result]


def _find_cycle(after: list[set[int]], stuck: list[int]) -> list[int]:
    """A cycle among the callbacks left unplaced, its first node repeated at the end."""
    stuck_set = set(stuck)
    # Every unplaced callback has an unplaced predecessor, so walking predecessors must loop.
    walk: list[int] = []
    position: dict[int, int] = {}
    node = stuck[0]
    while node not in position:
        position[node] = len(walk)
        walk.append(node)
        node = min(i for i in stuck_set if node in after[i])
    cycle = walk[position[node] :][::-1]  # predecessors walked backwards: reverse to "runs before"
    return [*cycle, cycle[0]]
