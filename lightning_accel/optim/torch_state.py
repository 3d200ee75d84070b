"""torch.optim state dicts in the chapter's vocabulary, so a project can switch optimizers
mid-training and keep its moments.

`AccelOptimizer.load_state_dict` calls `from_torch_state_dict` when it is handed the state of a
`torch.optim.Adam`, `AdamW`, `SGD` or `RMSprop` (Lightning does that when a checkpoint saved with
one of them resumes with a recipe). The translation is exact or it is refused: the pipeline must
compute what the torch optimizer computed, with the same damping of the averages and the same
kind of weight decay, or the next step would silently differ.

| torch | here |
| --- | --- |
| `exp_avg`, `exp_avg_sq` (Adam, AdamW) | `grad_avg`, `sqr_avg` |
| `momentum_buffer` (SGD) | `grad_avg` |
| `square_avg` (RMSprop) | `sqr_avg` |
| `step` (a float tensor) | `step` (a Python int) |
| `lr`, `eps` | `lr`, `eps` |
| `betas`; `momentum`; `alpha` | (`mom`, `sqr_mom`); `mom`; `sqr_mom` |
| `weight_decay` | `wd`, decoupled (AdamW) or L2 (Adam, SGD, RMSprop) |
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

from .callbacks import (
    adam_step,
    average_grad,
    average_sqr_grad,
    l2_reg,
    momentum_step,
    rms_prop_step,
    sgd_step,
    step_stat,
    weight_decay,
)
from .loading import GROUP_BOOKKEEPING

__all__ = ["is_torch_state_dict", "from_torch_state_dict"]

# Settings that choose how torch runs the math, never what it computes.
_EXECUTION = frozenset({"foreach", "fused", "capturable", "differentiable"})
_KNOWN_KEYS = {
    "Adam": frozenset(
        {"lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay"}
    ),
    "SGD": frozenset({"lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"}),
    "RMSprop": frozenset(
        {"lr", "momentum", "alpha", "eps", "centered", "weight_decay", "maximize"}
    ),
}
# The pipelines (after an optional weight-decay callback) each torch optimizer's math equals.
_ADAM = [partial(average_grad, dampening=True), average_sqr_grad, step_stat, adam_step]
_SGD_MOMENTUM = [average_grad, momentum_step]
_SGD = [sgd_step]
_RMSPROP = [average_sqr_grad, rms_prop_step]
_RENAMES = {
    "Adam": {"exp_avg": "grad_avg", "exp_avg_sq": "sqr_avg"},
    "SGD": {"momentum_buffer": "grad_avg"},
    "RMSprop": {"square_avg": "sqr_avg"},
}


def is_torch_state_dict(sd: Any) -> bool:
    """Whether `sd` was saved by a built-in torch.optim optimizer (they all keep `foreach` and
    `differentiable` in their groups; an AccelOptimizer keeps the chapter's names instead)."""
    groups = sd.get("param_groups") if isinstance(sd, dict) else None
    if not isinstance(groups, (list, tuple)) or not groups:
        return False
    return all(isinstance(g, dict) and {"foreach", "differentiable"} <= set(g) for g in groups)


def _torch_kind(group: dict[str, Any]) -> str:
    keys = set(group)
    if {"betas", "amsgrad", "weight_decay"} <= keys:
        return "Adam"
    if {"momentum", "dampening", "nesterov"} <= keys:
        return "SGD"
    if {"alpha", "centered", "momentum"} <= keys:
        return "RMSprop"
    names = sorted(keys - GROUP_BOOKKEEPING - _EXECUTION)
    raise ValueError(
        f"cannot translate this torch.optim state_dict (param group keys {names}): only the "
        "states of torch.optim.Adam, AdamW, SGD and RMSprop have a translation"
    )


def _bound(cb: Callable) -> tuple[Any, tuple]:
    """A callback as (function, its keyword defaults with the partial's bindings applied)."""
    keywords: dict[str, Any] = {}
    while isinstance(cb, partial):
        if cb.args:
            return cb, ()
        keywords = {**cb.keywords, **keywords}
        cb = cb.func
    try:
        params = list(inspect.signature(cb).parameters.values())[1:]
    except (TypeError, ValueError):
        return cb, tuple(sorted(keywords.items()))
    effective = {q.name: q.default for q in params if q.default is not q.empty}
    effective.update(keywords)
    return cb, tuple(sorted(effective.items(), key=lambda kv: kv[0]))


def _split_decay(cbs: Sequence[Callable]) -> tuple[str | None, list]:
    """('decoupled' | 'l2' | None, the rest of the pipeline as `_bound` forms)."""
    forms = [_bound(cb) for cb in cbs]
    decay = None
    if forms and forms[0] in (_bound(weight_decay), _bound(l2_reg)):
        decay = "decoupled" if forms[0] == _bound(weight_decay) else "l2"
        forms = forms[1:]
    return decay, forms


def _refuse(kind: str, g: int, why: str) -> None:
    raise ValueError(f"cannot load torch.optim.{kind}'s state (parameter group {g}): {why}")


def _core_for(kind: str, group: dict[str, Any], g: int) -> tuple[list, str]:
    """The pipeline core a torch group's math needs, and its name for messages."""
    if group.get("maximize"):
        _refuse(kind, g, "maximize=True ascends the loss; this pipeline descends it")
    if kind == "Adam":
        if group.get("amsgrad"):
            _refuse(kind, g, "amsgrad=True keeps max_exp_avg_sq, which this pipeline does not")
        return _ADAM, "Adam (damped grad_avg, sqr_avg, step, adam_step)"
    if kind == "SGD":
        if group.get("nesterov"):
            _refuse(kind, g, "nesterov=True is not a step this pipeline takes")
        if group.get("dampening", 0) != 0:
            _refuse(
                kind,
                g,
                f"dampening={group['dampening']!r}: torch damps the momentum from the second "
                "step on, average_grad(dampening=True) damps it from the first and only by "
                "1 - mom, so the averages would differ",
            )
        if group.get("momentum", 0) != 0:
            return _SGD_MOMENTUM, "SGD with momentum (undamped average_grad, momentum_step)"
        return _SGD, "SGD without momentum (sgd_step)"
    if group.get("centered"):
        _refuse(kind, g, "centered=True divides by a variance, this pipeline by a mean square")
    if group.get("momentum", 0) != 0:
        _refuse(
            kind,
            g,
            f"momentum={group['momentum']!r}: torch averages the normalised steps, RMSProp "
            "here averages the gradients before normalising, so the steps would differ",
        )
    return _RMSPROP, "RMSProp without momentum (average_sqr_grad, rms_prop_step)"


def _decay_style(kind: str, group: dict[str, Any], g: int) -> str:
    if kind != "Adam":
        return "l2"  # SGD and RMSprop add weight_decay * p to the gradient
    if "decoupled_weight_decay" in group:
        return "decoupled" if group["decoupled_weight_decay"] else "l2"
    if group.get("weight_decay", 0) == 0:
        return "either"
    _refuse(
        kind,
        g,
        "the state_dict does not say whether its weight decay is decoupled (AdamW) or L2 (Adam); "
        "torch >= 2.6 saves `decoupled_weight_decay` — add it to each param group to load",
    )
    raise AssertionError  # unreachable: _refuse raises


def _step(value: Any, kind: str, g: int) -> int:
    step = float(value.item() if isinstance(value, Tensor) else value)
    if step < 0 or step != int(step):
        _refuse(kind, g, f"step {value!r} is not a count of steps")
    return int(step)


def from_torch_state_dict(sd: dict[str, Any], opt: Optimizer) -> dict[str, Any]:
    """`sd`, a torch.optim Adam/AdamW/SGD/RMSprop state dict, as the state dict of `opt` (an
    AccelOptimizer) whose pipeline computes the same numbers; raises ValueError naming what
    cannot be carried over.

    `sd` itself is not changed; tensors are shared with it (loading copies them).
    """
    decay, core = _split_decay(opt.cbs)
    groups = sd["param_groups"]
    kind = _torch_kind(groups[0])
    has_step = any(form[0] is step_stat for form in core)
    new_groups = []
    for g, group in enumerate(groups):
        if _torch_kind(group) != kind:
            _refuse(kind, g, f"its groups mix torch.optim.{kind} and {_torch_kind(group)}")
        unknown = sorted(set(group) - _KNOWN_KEYS[kind] - _EXECUTION - GROUP_BOOKKEEPING)
        if unknown:
            _refuse(kind, g, f"keys {unknown} have no known meaning to translate")
        needed, needed_name = _core_for(kind, group, g)
        if core != [_bound(cb) for cb in needed]:
            _refuse(kind, g, f"its math is {needed_name}; this optimizer's pipeline differs")
        wd = group.get("weight_decay", 0)
        style = _decay_style(kind, group, g)
        if wd != 0 and decay is None:
            _refuse(kind, g, f"weight_decay={wd!r}, and this pipeline has no weight decay")
        if wd != 0 and style != decay:
            ours = "decoupled (weight_decay)" if decay == "decoupled" else "L2 (l2_reg)"
            _refuse(
                kind,
                g,
                f"its weight decay is {'decoupled' if style == 'decoupled' else 'L2'} and this "
                f"pipeline's is {ours}; build the recipe with decouple_wd="
                f"{style == 'decoupled'}",
            )
        hypers: dict[str, Any] = {"lr": group["lr"]}
        if kind == "Adam":
            hypers["mom"], hypers["sqr_mom"] = tuple(group["betas"])
            hypers["eps"] = group["eps"]
        elif kind == "SGD":
            hypers["mom"] = group["momentum"]
        else:
            hypers.update(mom=group["momentum"], sqr_mom=group["alpha"], eps=group["eps"])
        hypers["wd"] = wd
        # A zero the pipeline has no name for (plain SGD's momentum, no decay) means nothing.
        ours = opt.param_groups[g] if g < len(opt.param_groups) else {}
        for name in ("mom", "wd"):
            if name not in ours and hypers[name] == 0:
                del hypers[name]
        new = {k: v for k, v in group.items() if k in GROUP_BOOKKEEPING}
        new.update(hypers)
        if "mom" in hypers:
            new["momentum"] = hypers["mom"]
            if "sqr_mom" in hypers:
                new["betas"] = (hypers["mom"], hypers["sqr_mom"])
        new_groups.append(new)
    group_of = {pid: g for g, group in enumerate(groups) for pid in group["params"]}
    new_state: dict[Any, dict[str, Any]] = {}
    for pid, pstate in sd["state"].items():
        out = {}
        for key, value in pstate.items():
            if key == "step":
                if has_step:
                    out["step"] = _step(value, kind, group_of.get(pid, 0))
            elif key == "momentum_buffer" and value is None:
                continue  # torch's placeholder for a parameter that has not stepped
            else:
                out[_RENAMES[kind].get(key, key)] = value
        new_state[pid] = out
    return {"state": new_state, "param_groups": new_groups}
