"""Read and write hyper-parameters by the chapter's names on any optimizer.

An `AccelOptimizer` (anything with `hypers` and `set_hyper`) is used through its own API. A plain
`torch.optim.Optimizer` is reached through its param-group keys, so the schedules, `fit_one_cycle`
and `lr_find` also drive `torch.optim.SGD`, `Adam`, `AdamW`, `RMSprop`: `mom` is `momentum` or
`betas[0]`, `sqr_mom` is `betas[1]` or RMSprop's `alpha`, `wd` is `weight_decay`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["hyper_names", "get_hyper", "set_hyper", "snapshot_hypers"]

# Chapter name -> torch param-group key(s), first match wins; (key, index) reads inside a tuple.
_TORCH_KEYS: dict[str, tuple[tuple[str, int | None], ...]] = {
    "lr": (("lr", None),),
    "mom": (("momentum", None), ("betas", 0)),
    "sqr_mom": (("betas", 1), ("alpha", None)),
    "wd": (("weight_decay", None),),
    "eps": (("eps", None),),
}


def _is_accel(opt: Any) -> bool:
    return hasattr(opt, "set_hyper") and hasattr(opt, "hypers")


def _is_number(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() == 1
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def _torch_key(group: dict, name: str) -> tuple[str, int | None] | None:
    for key, index in _TORCH_KEYS.get(name, ((name, None),)):
        if key in group:
            return key, index
    return None


def hyper_names(opt: Any) -> list[str]:
    """The hyper-parameter names `opt` has in every parameter group, in the chapter's vocabulary."""
    if _is_accel(opt):
        hypers = opt.hypers
        if not hypers:
            return []
        common = set.intersection(*(set(h) for h in hypers))
        return sorted(n for n in common if all(_is_number(h[n]) for h in hypers))
    names = set()
    for name in _TORCH_KEYS:
        if all(_torch_key(g, name) is not None for g in opt.param_groups):
            names.add(name)
    torch_keys = {key for keys in _TORCH_KEYS.values() for key, _ in keys}
    for key, value in opt.param_groups[0].items():
        if key not in torch_keys and _is_number(value) and all(key in g for g in opt.param_groups):
            names.add(key)
    return sorted(names)


def _check_name(opt: Any, name: str) -> None:
    names = hyper_names(opt)
    if name not in names:
        raise ValueError(
            f"the optimizer {type(opt).__name__} has no hyper-parameter {name!r}; "
            f"it has: {', '.join(names)}"
        )


def get_hyper(opt: Any, name: str, check: bool = True) -> list[float]:
    """The value of `name` in each parameter group (`check=False`: the name is known to exist)."""
    if check:
        _check_name(opt, name)
    if _is_accel(opt):
        # An AccelOptimizer keeps every hyper-parameter in its param_groups (shared contract).
        return [_as_float(g[name]) for g in opt.param_groups]
    values = []
    for group in opt.param_groups:
        key, index = _torch_key(group, name)
        value = group[key] if index is None else group[key][index]
        values.append(_as_float(value))
    return values


def _as_float(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def _per_group(value: Any, n_groups: int, name: str) -> list[float]:
    if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, str):
        values = [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]
        if len(values) == 1:
            return values * n_groups
        if len(values) != n_groups:
            raise ValueError(
                f"a schedule for {name!r} returned {len(values)} values, "
                f"but the optimizer has {n_groups} parameter groups"
            )
        return values
    return [float(value)] * n_groups


def set_hyper(opt: Any, name: str, value: Any, check: bool = True) -> None:
    """Set `name` to `value`: a number for every group, or a sequence with one value per group.

    `check=False` skips looking the name up (the schedules check their names once per fit)."""
    if check:
        _check_name(opt, name)
    values = _per_group(value, len(opt.param_groups), name)
    if _is_accel(opt):
        opt.set_hyper(name, values)
        return
    for group, v in zip(opt.param_groups, values):
        key, index = _torch_key(group, name)
        if index is None:
            if isinstance(group[key], torch.Tensor):
                group[key].fill_(
                    v
                )  # tensor lr (capturable Adam): keep the tensor, change its value
            else:
                group[key] = v
        else:
            items = list(group[key])
            items[index] = v
            group[key] = tuple(items)


def snapshot_hypers(opt: Any) -> list[dict[str, float]]:
    """Every hyper-parameter of every group as plain floats (checkpoint-safe)."""
    names = hyper_names(opt)
    columns = {name: get_hyper(opt, name) for name in names}
    return [{name: columns[name][i] for name in names} for i in range(len(opt.param_groups))]
