"""The small vocabulary the multi-tensor forms of the optimizer callbacks are written in.

A multi-tensor form does for a list of parameters what its callback does for one, with
`torch._foreach_*` kernels: `form(params, states, **hypers) -> None`, mutating `states` in place.
`multi_tensor_form(cb)` attaches one to its callback as `cb.foreach`.

Scalars (hyper-parameters, step counts) may be Python numbers (eager execution) or 0-d tensors
(the compiled step passes tensors, so that a schedule changing them does not recompile); the
helpers here take either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

Scalar = float | Tensor
Form = Callable[..., None]


def multi_tensor_form(cb: Callable, elementwise: bool = False) -> Callable[[Form], Form]:
    """Decorator: declare the decorated function the multi-tensor form of `cb` (`cb.foreach`).

    `elementwise=True` promises that the form treats every element on its own, given its
    parameter's scalars (state and hyper-parameters): run on several parameters concatenated into
    one, it computes what it computes on each. The compiled step then runs small parameters
    together. Forms that reduce over a parameter (norms) are not element-wise.
    """

    def attach(form: Form) -> Form:
        form.elementwise = elementwise
        cb.foreach = form
        return form

    return attach


def grads(params: list[Tensor]) -> list[Tensor]:
    return [p.grad for p in params]


def flag(state: dict, hypers: dict[str, Any], name: str, default: bool) -> bool:
    """A per-parameter flag as the per-parameter call sees it: a group value wins over state."""
    return hypers[name] if name in hypers else state.get(name, default)


def state_list(params: list[Tensor], states: list[dict], key: str) -> list[Tensor]:
    """The state tensors under `key`, created as zeros where missing (first step)."""
    out = []
    for p, state in zip(params, states):
        buf = state.get(key)
        if buf is None:
            buf = state[key] = torch.zeros_like(p.grad)
        out.append(buf)
    return out


def optional_list(params: list[Tensor], states: list[dict], key: str) -> list[Tensor]:
    """The state tensors under `key`, or the gradient where a parameter has none."""
    return [s[key] if s.get(key) is not None else p.grad for p, s in zip(params, states)]


def each(xs: list[Tensor], scalar: Any) -> Any:
    """A scalar argument for a foreach op over `xs`: a tensor scalar goes in as a list of it.

    Given one tensor, Dynamo reads it with `.item()` and specialises the program on its value
    (recompiling whenever a schedule changes it); a list of 0-d tensors stays data.
    """
    if isinstance(scalar, Tensor) and scalar.dim() == 0:
        return [scalar] * len(xs)
    return scalar


def _is_tensor_scalar(x: Any) -> bool:
    return isinstance(x, Tensor) or (isinstance(x, list) and isinstance(x[0], Tensor))


def add_scaled_(xs: list[Tensor], ys: list[Tensor], alpha: Any) -> None:
    """xs += alpha * ys; alpha is one number, one tensor, or one number/tensor per parameter."""
    if _is_tensor_scalar(alpha):
        torch._foreach_add_(xs, torch._foreach_mul(ys, each(ys, alpha)))
    elif isinstance(alpha, list):
        # One kernel per distinct value keeps add's own rounding (usually a single value).
        for value in dict.fromkeys(alpha):
            idx = [i for i, a in enumerate(alpha) if a == value]
            torch._foreach_add_([xs[i] for i in idx], [ys[i] for i in idx], alpha=value)
    else:
        torch._foreach_add_(xs, ys, alpha=alpha)


def add_cmul_(xs: list[Tensor], a: list[Tensor], b: list[Tensor], value: Scalar) -> None:
    """xs += value * a * b."""
    if isinstance(value, Tensor):
        torch._foreach_add_(xs, torch._foreach_mul(torch._foreach_mul(a, b), each(a, value)))
    else:
        torch._foreach_addcmul_(xs, a, b, value=value)


def add_cdiv_(xs: list[Tensor], num: list[Tensor], den: list[Tensor], value: Any) -> None:
    """xs += value * num / den; value is one number or tensor, or one per parameter."""
    if _is_tensor_scalar(value):
        torch._foreach_add_(xs, torch._foreach_mul(torch._foreach_div(num, den), each(num, value)))
    else:
        torch._foreach_addcdiv_(xs, num, den, value)


def sqrt(x: Any) -> Any:
    """The square root of a number or a tensor."""
    return x.sqrt() if isinstance(x, Tensor) else math.sqrt(x)


def per_step(states: list[dict], fn: Callable[[Any], Any]) -> list[Any]:
    """fn(step) for each parameter, computed once per distinct step count.

    Parameters that missed steps (no gradient) have their own count, hence per-parameter values.
    Under torch.compile the counts are symbolic integers: grouping them by value would make the
    compiled program depend on it, so each is computed on its own.
    """
    steps = [s["step"] for s in states]
    if torch.compiler.is_compiling():
        return [fn(t) for t in steps]
    tensors = [t for t in steps if isinstance(t, Tensor)]
    if tensors:
        # Counts restored from an older checkpoint may be tensors, next to ints of new parameters.
        like = tensors[0]
        out = fn(
            torch.stack([torch.as_tensor(t, dtype=like.dtype, device=like.device) for t in steps])
        )
        if isinstance(out, tuple):
            return list(zip(*([x[i] for i in range(len(steps))] for x in out)))
        return [out[i] for i in range(len(steps))]
    cache: dict[int, Any] = {}
    return [cache[t] if t in cache else cache.setdefault(t, fn(t)) for t in steps]


def whole_norms(tensors: list[Tensor], shard_groups: Sequence[Any] = ()) -> Tensor:
    """The L2 norm of each tensor, as one vector, over the WHOLE tensor when it is sharded.

    Under FSDP2 a form sees only this process's shard of each parameter: `shard_groups` are the
    process groups the parameters are sharded over (the executors pass them to the forms), and
    the shards' sums of squares are added over those groups, one collective for all tensors.
    """
    norms = torch.stack(torch._foreach_norm(tensors))
    if not shard_groups:
        return norms
    squares = norms.double() ** 2  # float64: the sum over shards loses nothing to rounding
    for group in shard_groups:
        _all_reduce_sum_(squares, group)
    return squares.sqrt().to(norms.dtype)


def _all_reduce_sum_(t: Tensor, group: Any) -> None:
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)


__all__ = ["multi_tensor_form", "whole_norms"]
