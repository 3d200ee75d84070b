"""How a composed optimizer step runs: one executor per `impl`, chosen in one place.

An executor applies a pipeline of optimizer callbacks to the parameters of one group that have
gradients. Every executor computes the same numbers; they differ only in speed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

Executor = Callable[[Sequence[Callable], list[Tensor], list[dict], dict[str, Any]], None]


def run_per_param(
    cbs: Sequence[Callable], params: list[Tensor], states: list[dict], hypers: dict[str, Any]
) -> None:
    """The reference loop: every callback on every parameter, merging what it returns into state."""
    for p, state in zip(params, states):
        for cb in cbs:
            update = cb(p, **{**state, **hypers})
            if update:
                state.update(update)


def foreach_form(cb: Callable) -> Callable | None:
    """The multi-tensor form of a callback, if it has one."""
    return getattr(cb, "foreach", None)


def run_foreach(
    cbs: Sequence[Callable], params: list[Tensor], states: list[dict], hypers: dict[str, Any]
) -> None:
    """Each callback once over all parameters of the group, with multi-tensor kernels."""
    for cb in cbs:
        foreach_form(cb)(params, states, **hypers)


EXECUTORS: dict[str, Executor] = {"per_param": run_per_param, "foreach": run_foreach}
IMPLS = ("auto", "per_param", "foreach", "compiled")


def resolve_executor(impl: str, cbs: Sequence[Callable]) -> Executor:
    """The executor for `impl`; "auto" picks foreach when every callback has a multi-tensor form."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    missing = [getattr(cb, "__name__", repr(cb)) for cb in cbs if foreach_form(cb) is None]
    if impl == "auto":
        impl = "per_param" if missing else "foreach"
    if impl == "foreach" and missing:
        raise ValueError(
            f"impl='foreach' needs a multi-tensor form for every callback; missing for {missing}. "
            "Use impl='per_param' or impl='auto'."
        )
    if impl not in EXECUTORS:
        raise NotImplementedError(f"impl={impl!r} is not available yet")
    return EXECUTORS[impl]
