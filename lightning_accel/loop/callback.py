"""`Callback`, the chapter's callback base, the rules that order callbacks, and state keys."""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from .dispatch import call_callback
from .events import ALL_EVENTS

__all__ = [
    "Callback",
    "sort_callbacks",
    "unmatched_constraints",
    "check_constraints",
    "unique_state_keys",
    "check_event_names",
    "snake_name",
    "LEARNER_ATTRS",
]

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
    {"learn", "order", "run", "run_train", "run_valid", "run_before", "run_after", "name",
     "state_key"}
)  # fmt: skip


def snake_name(cls_name: str) -> str:
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
        return snake_name(type(self).__name__)

    @property
    def state_key(self) -> str:
        """The key of this callback's entry in a checkpoint (Lightning's convention).

        The class's qualified name by default; override it when instances of one class differ
        in what they hold. Several attached callbacks with the same key are numbered in the
        order they were attached (`Recorder`, `Recorder#2`), so each keeps its own state.
        """
        return type(self).__qualname__

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

    # One implementation for a callback called alone and for the loop's dispatcher.
    __call__ = call_callback

    def __repr__(self) -> str:
        return type(self).__name__


def _has_state(learn: Any, name: str) -> bool:
    has = getattr(learn, "has_state", None)
    return bool(has(name)) if has is not None else hasattr(learn, name)


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


def _spec_name(spec: type | str) -> str:
    return spec.__name__ if isinstance(spec, type) else repr(spec)


def check_constraints(cb: Callback) -> None:
    """Refuse a callback whose `run_before`/`run_after` names itself: it can never hold."""
    for attr in ("run_before", "run_after"):
        for spec in _as_tuple(getattr(cb, attr)):
            if not isinstance(spec, (str, type)):
                raise TypeError(
                    f"{type(cb).__name__}.{attr} must name callbacks by class or name, got {spec!r}"
                )
            if _matches(cb, spec):
                raise ValueError(
                    f"{type(cb).__name__}.{attr} names {_spec_name(spec)}, which is the callback "
                    f"itself: a callback cannot run {attr[4:]} itself"
                )


def unmatched_constraints(cbs: Iterable[Callback]) -> list[str]:
    """`run_before`/`run_after` entries that name no callback in `cbs`, as readable lines."""
    cbs = list(cbs)
    lines = []
    for cb in cbs:
        for attr in ("run_before", "run_after"):
            for spec in _as_tuple(getattr(cb, attr)):
                if not any(other is not cb and _matches(other, spec) for other in cbs):
                    lines.append(f"{type(cb).__name__}.{attr} = {_spec_name(spec)}")
    return lines


def unique_state_keys(cbs: Iterable[Callback]) -> dict[str, Callback]:
    """Each callback under its `state_key`; repeated keys get `#2`, `#3`, ... in list order."""
    keyed: dict[str, Callback] = {}
    seen: dict[str, int] = {}
    for cb in cbs:
        key = cb.state_key
        seen[key] = seen.get(key, 0) + 1
        keyed[key if seen[key] == 1 else f"{key}#{seen[key]}"] = cb
    return keyed


def sort_callbacks(cbs: Iterable[Callback]) -> list[Callback]:
    """Order callbacks so every `run_before`/`run_after` holds; ties by `order`, then insertion.

    Raises `ValueError` naming the cycle when the constraints contradict each other, and when a
    callback names itself.
    """
    cbs = list(cbs)
    n = len(cbs)
    after: list[set[int]] = [set() for _ in range(n)]  # after[i]: indices that must follow i
    for i, cb in enumerate(cbs):
        check_constraints(cb)
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
