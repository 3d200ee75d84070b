"""Whether a state_dict belongs to an AccelOptimizer's pipeline, checked before anything loads.

torch's `Optimizer.load_state_dict` accepts any dict with the right number of parameters: another
optimizer's moments, another model's shapes or a group without `eps` load silently and fail or
train wrongly at the next step. Here every part is compared with what this optimizer would make
itself: the pipeline that saved it, the hyper-parameters of each group (and their ranges), and,
per parameter, the state its stat callbacks keep, found by running the pipeline once on a
shapeless (meta) copy of the parameter.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .validation import check_hyper

if TYPE_CHECKING:
    from .optimizer import AccelOptimizer

__all__ = ["describe_pipeline", "check_loadable", "PARAM_FLAGS", "GROUP_BOOKKEEPING"]

# Per-parameter switches users set in `opt.state[p]`; they are not statistics.
PARAM_FLAGS = ("do_wd", "force_train")
# What torch's LR schedulers add to param groups (LambdaLR... `initial_lr`, OneCycleLR and
# CyclicLR the rest), and the bookkeeping torch keeps there itself: not hyper-parameters.
SCHEDULER_KEYS = frozenset({"initial_lr", "max_lr", "min_lr", "base_momentum", "max_momentum"})
GROUP_BOOKKEEPING = frozenset({"params", "param_names"}) | SCHEDULER_KEYS
_ALIASES = ("momentum", "betas")


class _Unknown:
    """The dry run could not run: nothing is known about this parameter's state."""


def describe_pipeline(cbs: Sequence[Callable]) -> list[str]:
    """The callbacks as text, bound arguments included: `average_grad(dampening=True)`."""
    out = []
    for cb in cbs:
        args: list[str] = []
        while isinstance(cb, partial):
            bound = [repr(a) for a in cb.args] + [f"{k}={v!r}" for k, v in cb.keywords.items()]
            args = bound + args
            cb = cb.func
        name = getattr(cb, "__qualname__", None) or type(cb).__qualname__
        out.append(f"{name}({', '.join(args)})" if args else name)
    return out


def _fail(message: str) -> None:
    raise ValueError(f"state_dict does not fit this optimizer: {message}")


def _check_structure(opt: AccelOptimizer, sd: Any) -> dict[Any, tuple[int, int, Tensor]]:
    """Groups and parameter counts; returns saved id -> (group, index, our parameter)."""
    if not isinstance(sd, dict) or not {"state", "param_groups"} <= set(sd):
        raise ValueError("state_dict must be a dict with 'state' and 'param_groups' keys")
    saved = sd["param_groups"]
    if not isinstance(saved, (list, tuple)) or not all(
        isinstance(g, dict) and "params" in g for g in saved
    ):
        _fail("'param_groups' must be a list of dicts, each with a 'params' list")
    if len(saved) != len(opt.param_groups):
        _fail(
            f"state_dict has {len(saved)} parameter groups, this optimizer has "
            f"{len(opt.param_groups)}"
        )
    by_id: dict[Any, tuple[int, int, Tensor]] = {}
    for g, (ours, theirs) in enumerate(zip(opt.param_groups, saved)):
        if len(ours["params"]) != len(theirs["params"]):
            _fail(
                f"parameter group {g} has {len(theirs['params'])} parameters in state_dict "
                f"but {len(ours['params'])} in this optimizer"
            )
        for i, (pid, p) in enumerate(zip(theirs["params"], ours["params"])):
            if pid in by_id:
                _fail(f"parameter id {pid!r} is listed twice in 'param_groups'")
            by_id[pid] = (g, i, p)
    if not isinstance(sd["state"], dict):
        _fail("'state' must be a dict from parameter id to that parameter's state")
    stray = [pid for pid in sd["state"] if pid not in by_id]
    if stray:
        _fail(f"'state' has entries for parameter ids {stray} that no parameter group lists")
    return by_id


def _hyper_names(group: dict[str, Any]) -> set[str]:
    return {k for k in group if k not in GROUP_BOOKKEEPING}


def _check_groups(opt: AccelOptimizer, saved: list[dict[str, Any]]) -> None:
    """Each saved group has exactly this optimizer's hyper-parameters, each in its range."""
    for g, (ours, theirs) in enumerate(zip(opt.param_groups, saved)):
        where = f" (parameter group {g} of the state_dict)"
        extra = sorted(_hyper_names(theirs) - _hyper_names(ours))
        missing = sorted(_hyper_names(ours) - _hyper_names(theirs))
        if extra or missing:
            parts = []
            if extra:
                parts.append(f"has hyper-parameters {extra} that this optimizer does not know")
            if missing:
                parts.append(f"lacks {missing}, which this optimizer's pipeline uses")
            _fail(f"parameter group {g} of the state_dict " + " and ".join(parts))
        for name in sorted(_hyper_names(theirs) - set(_ALIASES)):
            try:
                check_hyper(name, theirs[name], where)
            except TypeError as err:  # a state_dict that does not fit is a ValueError throughout
                _fail(str(err))
        # The torch-facing aliases must say what `mom`/`sqr_mom` say, or loading would split them.
        if "momentum" in theirs and theirs["momentum"] != theirs.get("mom"):
            _fail(
                f"parameter group {g} has momentum={theirs['momentum']!r} "
                f"but mom={theirs.get('mom')!r}"
            )
        if "betas" in theirs:
            betas = tuple(theirs["betas"])
            expected = tuple(theirs[k] for k in ("mom", "sqr_mom") if k in theirs)
            if betas[: len(expected)] != expected:
                _fail(f"parameter group {g} has betas={betas!r} but (mom, sqr_mom)={expected!r}")


def _dry_run(opt: AccelOptimizer, p: Tensor, hypers: dict[str, Any], flags: dict) -> Any:
    """The state the pipeline keeps for `p`, from one run on a meta copy (no memory, no math).

    A callback that needs real values (e.g. Python control flow on a tensor) gets a zero copy on
    p's device instead; if even that fails, nothing is known (`_Unknown`).
    """
    for device in ("meta", p.device):
        q = torch.zeros(p.shape, dtype=p.dtype, device=device)
        q.grad = torch.zeros_like(q)
        trial = dict(flags)
        try:
            with torch.no_grad():
                for cb in opt.cbs:
                    update = cb(q, **{**trial, **hypers})
                    if update:
                        trial.update(update)
        except Exception:  # noqa: BLE001 - any failure means: try the next way, then give up
            continue
        return {k: v for k, v in trial.items() if k not in flags}
    return _Unknown()


def _mismatch(saved: Any, expected: Any) -> str | None:
    """How a saved state value differs from the one the pipeline would keep, or None."""
    if isinstance(expected, Tensor):
        if not isinstance(saved, Tensor):
            return f"is a {type(saved).__name__}, but this pipeline keeps a tensor"
        if expected.dim() == 0:
            if saved.numel() != 1:
                return f"has shape {tuple(saved.shape)}, but this pipeline keeps one value"
        elif saved.shape != expected.shape:
            return (
                f"has shape {tuple(saved.shape)}, but this pipeline keeps it shaped "
                f"{tuple(expected.shape)} (like the parameter)"
            )
        if saved.is_complex() != expected.is_complex() or not (
            saved.is_floating_point() or saved.is_complex()
        ):
            return f"has dtype {saved.dtype}, but this pipeline keeps {expected.dtype}"
        return None
    if isinstance(expected, bool):
        return None if isinstance(saved, bool) else f"is {saved!r}, but must be True or False"
    if isinstance(expected, numbers.Real):
        # Numbers may be kept as Python numbers or, by the compiled executor, as 0-d tensors.
        if isinstance(saved, Tensor) and saved.numel() == 1 and not saved.is_complex():
            value = saved.item()
        elif isinstance(saved, numbers.Real) and not isinstance(saved, bool):
            value = saved
        else:
            return f"is {saved!r}, but this pipeline keeps one number"
        if isinstance(expected, int) and not (value >= 0 and value == int(value)):
            return f"is {saved!r}, but this pipeline keeps a count (an integer >= 0)"
    return None


def _optional_names(opt: AccelOptimizer) -> set[str]:
    """Names callbacks take with a default: per-parameter switches (`do_wd`) and state."""
    return set().union(*(optional for _, optional in opt._needs))


def _check_param_states(
    opt: AccelOptimizer, sd: dict[str, Any], by_id: dict[Any, tuple[int, int, Tensor]]
) -> None:
    allowed_extra = set(PARAM_FLAGS) | _optional_names(opt)
    cache: dict[tuple, Any] = {}
    for pid, pstate in sd["state"].items():
        g, i, p = by_id[pid]
        label = f"parameter {pid!r} (group {g}, index {i}, shape {tuple(p.shape)})"
        if not isinstance(pstate, dict):
            _fail(f"the state of {label} must be a dict, got {type(pstate).__name__}")
        for flag in PARAM_FLAGS:
            if flag in pstate and not isinstance(pstate[flag], bool):
                _fail(f"{flag!r} of {label} must be True or False, got {pstate[flag]!r}")
        flags = {k: v for k, v in pstate.items() if k in PARAM_FLAGS}
        group = sd["param_groups"][g]
        hypers = {k: v for k, v in group.items() if k not in GROUP_BOOKKEEPING}
        key = (g, tuple(p.shape), p.dtype, p.device, tuple(sorted(flags.items())))
        if key not in cache:
            cache[key] = _dry_run(opt, p, hypers, flags)
        expected = cache[key]
        stats = {k: v for k, v in pstate.items() if k not in PARAM_FLAGS}
        if isinstance(expected, _Unknown):
            # Nothing better is known: a tensor shaped unlike the parameter still cannot fit.
            for k, v in stats.items():
                if isinstance(v, Tensor) and v.dim() > 0 and v.shape != p.shape:
                    _fail(f"state {k!r} of {label} has shape {tuple(v.shape)}")
            continue
        unknown = sorted(set(stats) - set(expected) - allowed_extra)
        if unknown:
            kept = sorted(expected) or "no state"
            _fail(
                f"{label} has state {unknown} that this optimizer's pipeline does not keep "
                f"(it keeps {kept}): the state_dict comes from another optimizer"
            )
        produced = set(stats) & set(expected)
        missing = sorted(set(expected) - produced)
        if produced and missing:
            _fail(f"{label} has state {sorted(produced)} but lacks {missing}")
        for k in sorted(produced):
            problem = _mismatch(stats[k], expected[k])
            if problem:
                _fail(f"state {k!r} of {label} {problem}")


def check_loadable(opt: AccelOptimizer, sd: Any) -> None:
    """Raise a ValueError naming the first difference between `sd` and what `opt` keeps."""
    by_id = _check_structure(opt, sd)
    if "pipeline" in sd:
        ours = describe_pipeline(opt.cbs)
        if list(sd["pipeline"]) != ours:
            _fail(
                f"it was saved by an optimizer running {list(sd['pipeline'])}, and this one runs "
                f"{ours} (delete the state_dict's 'pipeline' entry to load it all the same)"
            )
    _check_groups(opt, sd["param_groups"])
    _check_param_states(opt, sd, by_id)
