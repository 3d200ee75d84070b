"""How a composed optimizer step runs: one executor per `impl`, chosen in one place.

An executor applies a pipeline of optimizer callbacks to the parameters of one group that have
gradients. Every executor computes the same numbers and differs only in speed: the eager
multi-tensor forms use the callbacks' own kernels in the same order (bit for bit equal for most
built-ins), the compiled step agrees to float32 rounding.

- "per_param": the reference loop, parameter-major (every callback on p1, then on p2, ...).
- "foreach": callback-major, each callback once over the whole group (over cache-sized buckets
  of it on CPU) with its multi-tensor form; every callback must have one.
- "auto" (default): callback-major, multi-tensor where a callback has a form and per-parameter
  where it has not. Callback-major order gives the same numbers as the reference loop because a
  callback only reads and writes its own parameter and that parameter's state.
- "compiled": the multi-tensor forms traced by `torch.compile` into fused kernels
  (`compiled.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor

from .foreach import FOREACH_FORMS

Executor = Callable[[Sequence[Callable], list[Tensor], list[dict], dict[str, Any]], None]
IMPLS = ("auto", "per_param", "foreach", "compiled")


def callback_label(cb: Callable) -> str:
    """A readable name for a callback, looking through `functools.partial`."""
    while isinstance(cb, partial):
        cb = cb.func
    return getattr(cb, "__name__", repr(cb))


def foreach_form(cb: Callable) -> Callable | None:
    """The multi-tensor form of a callback, or None.

    A callback's own `.foreach` attribute wins; the built-in callbacks have theirs registered in
    `foreach.FOREACH_FORMS`. A `functools.partial` of a callback with a form gets the same
    partial of the form, so its bound keywords (e.g. `dampening=True`) reach the form.
    """
    form = getattr(cb, "foreach", None)
    if form is not None:
        return form
    if isinstance(cb, partial):
        if cb.args:  # positional arguments would bind `p` itself: no sound multi-tensor analogue
            return None
        inner = foreach_form(cb.func)
        return None if inner is None else partial(inner, **cb.keywords)
    try:
        return FOREACH_FORMS.get(cb)
    except TypeError:  # an unhashable callable cannot be a registered built-in
        return None


@torch.no_grad()
def run_per_param(
    cbs: Sequence[Callable], params: list[Tensor], states: list[dict], hypers: dict[str, Any]
) -> None:
    """The reference loop: every callback on every parameter, merging what it returns into state."""
    for p, state in zip(params, states):
        for cb in cbs:
            update = cb(p, **{**state, **hypers})
            if update:
                state.update(update)


def _run_one_per_param(
    cb: Callable, params: list[Tensor], states: list[dict], hypers: dict[str, Any]
) -> None:
    for p, state in zip(params, states):
        update = cb(p, **{**state, **hypers})
        if update:
            state.update(update)


# On CPU the element-wise kernels are bound by memory bandwidth. Running the whole pipeline over a
# bucket of parameters small enough to stay in cache, bucket after bucket, reads each tensor from
# memory about once instead of once per kernel, as torch's per-parameter loop does; a multi-tensor
# kernel over the whole group would stream every tensor through memory for each operation.
# GPUs gain nothing from it and pay more launches: there the group is one bucket.
CPU_BUCKET_NUMEL = 1 << 18


def buckets(params: list[Tensor]) -> list[slice]:
    """Consecutive runs of parameters to step together (see CPU_BUCKET_NUMEL)."""
    if params[0].device.type != "cpu":
        return [slice(0, len(params))]
    out, start, size = [], 0, 0
    for i, p in enumerate(params):
        if size and size + p.numel() > CPU_BUCKET_NUMEL:
            out.append(slice(start, i))
            start, size = i, 0
        size += p.numel()
    out.append(slice(start, len(params)))
    return out


@torch.no_grad()
def run_callback_major(
    cbs: Sequence[Callable], params: list[Tensor], states: list[dict], hypers: dict[str, Any]
) -> None:
    """Each callback once per bucket of parameters: multi-tensor where it has a form, else per
    parameter."""
    if not params:
        return
    forms = [foreach_form(cb) for cb in cbs]
    for bucket in buckets(params):
        ps, ss = params[bucket], states[bucket]
        for cb, form in zip(cbs, forms):
            if form is None:
                _run_one_per_param(cb, ps, ss, hypers)
            else:
                form(ps, ss, **hypers)


# "foreach" is the callback-major executor with every callback required to have a form.
run_foreach = run_callback_major

EXECUTORS: dict[str, Executor] = {
    "per_param": run_per_param,
    "foreach": run_foreach,
    "auto": run_callback_major,
}


def missing_forms(cbs: Sequence[Callable]) -> list[str]:
    """Names of the callbacks without a multi-tensor form."""
    return [callback_label(cb) for cb in cbs if foreach_form(cb) is None]


def resolve_executor(impl: str, cbs: Sequence[Callable]) -> Executor:
    """The executor for `impl` (one of IMPLS) running the pipeline `cbs`.

    "auto" is multi-tensor where it can be and per-parameter where it must: it never fails.
    "foreach" and "compiled" need a multi-tensor form for every callback and say which lack one.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl in ("foreach", "compiled"):
        missing = missing_forms(cbs)
        if missing:
            raise ValueError(
                f"impl={impl!r} needs a multi-tensor form for every callback; missing for "
                f"{missing}. Give those callbacks a `.foreach` form (signature "
                "`(params, states, **hypers) -> None`), or use impl='auto', which runs them "
                "per parameter."
            )
    if impl == "compiled":
        from .compiled import compiled_executor  # imports torch._dynamo only when asked for

        return compiled_executor(cbs)
    if impl == "auto" and len(missing_forms(cbs)) == len(cbs):
        return run_per_param  # nothing to run multi-tensor: the reference loop, as is
    return EXECUTORS[impl]
