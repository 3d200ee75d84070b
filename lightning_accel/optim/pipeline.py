"""What the executors need to know about a pipeline's callbacks: names, forms, bound arguments.

A callback may be a plain function or a `functools.partial` of one; a partial's keywords are
its bound arguments, which the call's own keywords (state, then hyper-parameters) override.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from typing import Any

from torch import Tensor


def callback_name(cb: Callable) -> str:
    """A readable name for a callback, looking through `functools.partial`."""
    return getattr(base_function(cb), "__name__", repr(cb))


def base_function(cb: Callable) -> Callable:
    """The function under any `functools.partial` layers."""
    while isinstance(cb, partial):
        cb = cb.func
    return cb


def bound_arguments(cb: Callable) -> dict[str, Any] | None:
    """The keywords `functools.partial` layers bind, innermost first; None if any binds
    positional arguments (they would bind the parameter `p` itself)."""
    layers = []
    while isinstance(cb, partial):
        if cb.args:
            return None
        layers.append(cb.keywords)
        cb = cb.func
    out: dict[str, Any] = {}
    for keywords in reversed(layers):
        out.update(keywords)
    return out


def foreach_form(cb: Callable) -> Callable | None:
    """The multi-tensor form of a callback (`cb.foreach`), or None.

    A `functools.partial` of a callback with a form gets the same partial of the form, so its
    bound keywords (e.g. `dampening=True`) reach the form.
    """
    form = getattr(cb, "foreach", None)
    if form is not None:
        return form
    if isinstance(cb, partial):
        if cb.args:  # positional arguments would bind `p` itself: no sound multi-tensor analogue
            return None
        inner = foreach_form(cb.func)
        return None if inner is None else partial(inner, **cb.keywords)
    return None


def elementwise(form: Callable) -> bool:
    """Whether a multi-tensor form declared itself element-wise (`multi_tensor_form`)."""
    return bool(getattr(base_function(form), "elementwise", False))


def missing_forms(cbs: Sequence[Callable]) -> list[str]:
    """Names of the callbacks without a multi-tensor form."""
    return [callback_name(cb) for cb in cbs if foreach_form(cb) is None]


def signature_defaults(cb: Callable) -> dict[str, Any]:
    """The default values of a callback's (or its partial's function's) keyword arguments."""
    try:
        params = inspect.signature(base_function(cb)).parameters.values()
    except (TypeError, ValueError):  # builtins and C callables
        return {}
    return {q.name: q.default for q in params if q.default is not q.empty}


def pipeline_key(cbs: Sequence[Callable]) -> Hashable:
    """A hashable identity of a pipeline: equal for equal callbacks with equal bound arguments."""
    return tuple(_callback_key(cb) for cb in cbs)


def _callback_key(cb: Callable) -> Hashable:
    if isinstance(cb, partial):
        try:
            keywords = tuple(sorted(cb.keywords.items()))
            hash(keywords)
        except TypeError:
            return id(cb)
        return (_callback_key(cb.func), cb.args, keywords)
    try:
        hash(cb)
    except TypeError:
        return id(cb)
    return cb


def dense_layout(t: Tensor) -> bool:
    """Whether `t` covers its memory without gaps or overlaps, in whatever dimension order."""
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda x: x[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


__all__ = ["callback_name", "foreach_form", "missing_forms", "pipeline_key"]
