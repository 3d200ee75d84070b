"""AccelOptimizer: a `torch.optim.Optimizer` that does nothing itself but run optimizer callbacks.

Each callback is called as `cb(p, **{**state, **hypers})` and may return a dict merged into
`opt.state[p]` (the chapter's contract). Hyper-parameters live in `param_groups`, mirrored into
torch's `momentum`/`betas` keys so torch schedulers and Lightning's monitors can read and set them.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .execution import resolve_executor

# Keys of a param group that are bookkeeping or torch-facing aliases, not our hyper-parameters.
_NOT_HYPERS = frozenset({"params", "param_names", "momentum", "betas"})
# Per-parameter flags that survive `clear_state`.
_KEEP_ON_CLEAR = ("do_wd", "force_train")
_NON_NEGATIVE = ("lr", "eps", "wd")
_UNIT_INTERVAL = ("mom", "sqr_mom")


class HyperGroup(dict):
    """A param group whose `mom`/`sqr_mom` stay in step with torch's `momentum`/`betas` keys.

    Torch schedulers (OneCycleLR, CyclicLR) write `momentum` or `betas`; our callbacks read `mom`
    and `sqr_mom`. Mirroring on every write keeps both vocabularies true at all times.
    """

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        if key == "mom":
            if "momentum" in self:
                super().__setitem__("momentum", value)
            if "betas" in self:
                super().__setitem__("betas", (value, *tuple(self["betas"])[1:]))
        elif key == "sqr_mom":
            if "betas" in self:
                betas = tuple(self["betas"])
                super().__setitem__("betas", (betas[0], value, *betas[2:]))
        elif key == "momentum":
            super().__setitem__("mom", value)
            if "betas" in self:
                super().__setitem__("betas", (value, *tuple(self["betas"])[1:]))
        elif key == "betas":
            betas = tuple(value)
            super().__setitem__("betas", betas)
            super().__setitem__("mom", betas[0])
            if "momentum" in self:
                super().__setitem__("momentum", betas[0])
            if len(betas) > 1:
                super().__setitem__("sqr_mom", betas[1])

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def __ior__(self, other: Any) -> HyperGroup:
        self.update(other)
        return self


def _with_aliases(hypers: dict[str, Any]) -> dict[str, Any]:
    """`hypers` plus torch's names for them: `momentum` (= mom), `betas` (= (mom, sqr_mom))."""
    out = dict(hypers)
    if "mom" in out:
        out["momentum"] = out["mom"]
        if "sqr_mom" in out:
            out["betas"] = (out["mom"], out["sqr_mom"])
    return out


def _from_aliases(group: dict[str, Any]) -> dict[str, Any]:
    """Translate torch-style `momentum`/`betas` in a user's group dict into `mom`/`sqr_mom`."""
    out = dict(group)
    if "betas" in out:
        betas = tuple(out.pop("betas"))
        out.setdefault("mom", betas[0])
        if len(betas) > 1:
            out.setdefault("sqr_mom", betas[1])
    if "momentum" in out:
        out.setdefault("mom", out.pop("momentum"))
    return out


def check_hyper(name: str, value: Any) -> None:
    """Raise a ValueError when a known hyper-parameter has a value outside its domain."""
    if name not in _NON_NEGATIVE and name not in _UNIT_INTERVAL:
        return
    try:
        x = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if name in _NON_NEGATIVE and not x >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    if name in _UNIT_INTERVAL and not 0 <= x < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def callback_name(cb: Callable) -> str:
    """A readable name for a callback, looking through `functools.partial`."""
    while isinstance(cb, partial):
        cb = cb.func
    return getattr(cb, "__name__", repr(cb))


def callback_defaults(cb: Callable) -> dict[str, Any]:
    """`cb.defaults`, looking through `functools.partial` (which does not forward attributes)."""
    while True:
        defaults = getattr(cb, "defaults", None)
        if defaults is not None or not isinstance(cb, partial):
            return dict(defaults or {})
        cb = cb.func


def _signature_names(cb: Callable) -> tuple[frozenset[str], frozenset[str]]:
    """(required keyword names, optional keyword names) of a callback, after its parameter `p`."""
    try:
        params = list(inspect.signature(cb).parameters.values())[1:]
    except (TypeError, ValueError):  # builtins and C callables: nothing to check
        return frozenset(), frozenset()
    named = [q for q in params if q.kind in (q.POSITIONAL_OR_KEYWORD, q.KEYWORD_ONLY)]
    required = frozenset(q.name for q in named if q.default is q.empty)
    optional = frozenset(q.name for q in named if q.default is not q.empty)
    return required, optional


def _warn_unread(names: set[str], cbs: Sequence[Callable]) -> None:
    """Warn about hyper-parameters no callback names: most often a misspelling (`mon=0.9`).

    Callbacks take `**kwargs`, so a misspelt name would otherwise be silently ignored. Only
    callbacks whose signatures can be read are judged; any other one might read anything.
    """
    named: set[str] = set()
    for cb in cbs:
        try:
            named |= set(list(inspect.signature(cb).parameters)[1:])
        except (TypeError, ValueError):
            return
    unread = sorted(names - named)
    if unread:
        warnings.warn(
            f"hyper-parameter(s) {unread} are not arguments of any callback "
            f"({', '.join(callback_name(cb) for cb in cbs)}) and will only be read by callbacks "
            "that look into **kwargs; check the spelling",
            UserWarning,
            stacklevel=3,
        )


def _split_groups(params: Any) -> list[dict[str, Any]]:
    """Normalise tensors / list of lists of tensors / list of dicts into torch-style group dicts."""
    if isinstance(params, Tensor):
        raise TypeError(
            "params must be an iterable of tensors, of lists of tensors or of dicts, "
            f"not a single {torch.typename(params)}"
        )
    items = list(params)
    if not items:
        raise ValueError("params is empty: AccelOptimizer needs at least one parameter")
    if all(isinstance(x, dict) for x in items):
        return [dict(x) for x in items]
    if all(isinstance(x, Tensor) for x in items):
        return [{"params": items}]
    if all(isinstance(x, (list, tuple)) or inspect.isgenerator(x) for x in items):
        return [{"params": list(x)} for x in items]
    raise TypeError(
        "params must be an iterable of tensors, a list of lists of tensors (one group each) "
        "or a list of dicts with a 'params' key; got a mix of "
        f"{sorted({type(x).__name__ for x in items})}"
    )


def spread(value: Any, n: int) -> list[Any]:
    """One value per group: a scalar repeats, a list must have `n` items, a slice spreads.

    `slice(a, b)` spreads geometrically from a to b; `slice(b)` gives b/10 to all groups but the
    last, which gets b (discriminative learning rates).
    """
    if isinstance(value, slice):
        if value.step is not None:
            raise ValueError(f"a slice of hyper-parameter values takes no step, got {value!r}")
        stop = value.stop
        if value.start is None:
            return [stop / 10] * (n - 1) + [stop]
        if n == 1:
            return [stop]
        ratio = (stop / value.start) ** (1 / (n - 1))
        return [value.start * ratio**i for i in range(n)]
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return list(value) * n
        if len(value) != n:
            raise ValueError(
                f"got {len(value)} values but the optimizer has {n} parameter groups: "
                "give a scalar, one value per group, or a slice"
            )
        return list(value)
    return [value] * n


class AccelOptimizer(Optimizer):
    """Runs a list of optimizer callbacks over every parameter that has a gradient.

    `params`: tensors, a list of lists of tensors (one group each) or torch-style group dicts.
    `cbs`: the callbacks, each `cb(p, **{**state, **hypers}) -> dict | None`.
    `impl`: "auto", "per_param", "foreach" or "compiled" — how the pipeline executes.
    `defaults`: hyper-parameters, overriding the callbacks' own `.defaults`.
    """

    def __init__(
        self, params: Iterable[Any], cbs: Sequence[Callable], impl: str = "auto", **defaults: Any
    ) -> None:
        if callable(cbs):
            cbs = [cbs]
        self.cbs = list(cbs)
        for cb in self.cbs:
            if not callable(cb):
                raise TypeError(f"cbs must hold callables, got {cb!r}")
        self.impl = impl
        self._executor = resolve_executor(impl, self.cbs)
        merged: dict[str, Any] = {}
        for cb in self.cbs:
            merged.update(callback_defaults(cb))
        merged.update(_from_aliases(defaults))
        for name, value in merged.items():
            check_hyper(name, value)
        # Signatures are inspected once here; the first step checks names against the groups.
        self._needs = [_signature_names(cb) for cb in self.cbs]
        self._skip_next = False
        groups = _split_groups(params)
        given = set(_from_aliases(defaults)).union(*(_from_aliases(g) for g in groups))
        # lr and the momenta are always welcome: schedulers and monitors read and set them.
        _warn_unread(given - {"params", "param_names", "lr", "mom", "sqr_mom"}, self.cbs)
        super().__init__(groups, _with_aliases(merged))

    # -- groups and hyper-parameters -------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, filling missing hyper-parameters from the defaults and mirroring aliases."""
        group = _from_aliases(param_group)
        hypers = {k: v for k, v in self.defaults.items() if k not in _NOT_HYPERS}
        hypers.update({k: v for k, v in group.items() if k not in _NOT_HYPERS})
        for name, value in hypers.items():
            check_hyper(name, value)
        group.update(_with_aliases(hypers))
        super().add_param_group(group)
        self.param_groups[-1] = HyperGroup(self.param_groups[-1])

    def __setstate__(self, state: dict[str, Any]) -> None:
        # torch's load_state_dict rebuilds the groups as plain dicts: restore the mirroring.
        super().__setstate__(state)
        self.param_groups = [HyperGroup(g) for g in self.param_groups]
        if "_executor" not in self.__dict__:  # unpickled: executors (compiled ones) are rebuilt
            self._executor = resolve_executor(self.impl, self.cbs)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(cbs=self.cbs, impl=self.impl, _needs=self._needs, _skip_next=self._skip_next)
        return state

    @property
    def hypers(self) -> list[dict[str, Any]]:
        """The hyper-parameters of each group (without `params` and torch's alias keys)."""
        return [_hypers_of(g) for g in self.param_groups]

    def _known_hypers(self) -> set[str]:
        # Names in the groups, plus names a callback requires that no callback keeps as state
        # (stat callbacks take their state as optional arguments, e.g. `grad_avg=None`).
        names = {k for g in self.param_groups for k in g if k not in _NOT_HYPERS}
        state_names = set().union(*(optional for _, optional in self._needs))
        for required, _ in self._needs:
            names |= required - state_names
        return names

    def _planned(self, name: str, value: Any) -> list[Any]:
        if name in ("momentum", "betas"):
            raise ValueError(
                f"set {name!r} through its own names: 'mom' (and 'sqr_mom'); "
                f"'{name}' is kept in step automatically"
            )
        known = self._known_hypers()
        if name not in known:
            raise ValueError(f"unknown hyper-parameter {name!r}; known: {sorted(known)}")
        values = spread(value, len(self.param_groups))
        for v in values:
            check_hyper(name, v)
        return values

    def set_hyper(self, name: str, value: Any) -> None:
        """Set `name` in every group: a scalar, one value per group, or a slice (see `spread`)."""
        for group, v in zip(self.param_groups, self._planned(name, value)):
            group[name] = v

    def set_hypers(self, **kwargs: Any) -> None:
        """Several `set_hyper` calls; all values are checked before any is applied."""
        planned = {name: self._planned(name, value) for name, value in kwargs.items()}
        for name, values in planned.items():
            for group, v in zip(self.param_groups, values):
                group[name] = v

    # -- freezing and state ---------------------------------------------------------------

    def freeze_to(self, n: int) -> None:
        """Freeze the groups before index `n` (negative counts from the end); unfreeze the rest.

        A parameter whose state has `force_train=True` stays trainable (e.g. batchnorm layers).
        """
        n_groups = len(self.param_groups)
        frozen = n if n >= 0 else n_groups + n
        if frozen >= n_groups:
            warnings.warn(
                f"freeze_to({n}) freezes all {n_groups} parameter groups", UserWarning, stacklevel=2
            )
        for i, group in enumerate(self.param_groups):
            for p in group["params"]:
                force = self.state[p].get("force_train", False) if p in self.state else False
                p.requires_grad_(i >= frozen or bool(force))

    def freeze(self) -> None:
        """Freeze every group but the last (the head)."""
        if len(self.param_groups) < 2:
            raise ValueError(
                "freeze() needs at least two parameter groups (body and head); "
                f"this optimizer has {len(self.param_groups)}"
            )
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        """Make every parameter trainable."""
        self.freeze_to(0)

    def clear_state(self) -> None:
        """Forget the callbacks' statistics, keeping the per-parameter flags."""
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state:
                    old = self.state[p]
                    self.state[p] = {k: old[k] for k in _KEEP_ON_CLEAR if k in old}

    def skip_next_step(self) -> None:
        """Make the next `step()` run its closure only, changing no parameter and no state."""
        self._skip_next = True

    # -- stepping -------------------------------------------------------------------------

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Run the callbacks on every parameter with a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._skip_next:
            self._skip_next = False
            return loss
        # Gather and check every group before touching any, so an error leaves nothing half-done.
        work = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError(
                    "AccelOptimizer does not support sparse gradients; use a dense "
                    "embedding (sparse=False) or torch.optim.SparseAdam for those parameters"
                )
            states = [self.state[p] for p in params]
            hypers = _hypers_of(group)
            if not getattr(group, "checked", False):
                with torch.no_grad():
                    self._check_names(params[0], states[0], hypers)
                group.checked = True
            work.append((params, states, hypers))
        with torch.no_grad():
            for params, states, hypers in work:
                self._executor(self.cbs, params, states, hypers)
        return loss

    def _check_names(self, p: Tensor, state: dict, hypers: dict[str, Any]) -> None:
        """Fail clearly when a callback needs a name that neither the group nor the state gives.

        A stat callback conventionally takes the state it stores as an optional argument
        (`grad_avg=None`), so optional names of earlier callbacks count as available. When a
        name is still unexplained, the pipeline is tried once on a throwaway copy of one
        parameter, so the check never changes real parameters or state.
        """
        available = set(hypers) | set(state)
        for required, optional in self._needs:
            if required - available:
                self._dry_run(p, state, hypers)
                return
            available |= optional

    def _dry_run(self, p: Tensor, state: dict, hypers: dict[str, Any]) -> None:
        q = p.detach().clone()
        q.grad = p.grad.detach().clone()
        trial = {k: v.clone() if isinstance(v, Tensor) else v for k, v in state.items()}
        for cb, (required, _) in zip(self.cbs, self._needs):
            missing = sorted(required - set(trial) - set(hypers))
            if missing:
                names = ", ".join(repr(m) for m in missing)
                raise ValueError(
                    f"optimizer callback {callback_name(cb)!r} needs {names}, which no parameter "
                    f"group defines and no earlier callback stores in the state; pass it to the "
                    f"optimizer (e.g. AccelOptimizer(params, cbs, {missing[0]}=...)) or give the "
                    f"callback a `.defaults` dict"
                )
            update = cb(q, **{**trial, **hypers})
            if update:
                trial.update(update)

    # -- checkpoints ----------------------------------------------------------------------

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's `load_state_dict`, after checking that groups, sizes and shapes match."""
        self._check_loadable(state_dict)
        super().load_state_dict(state_dict)

    def _check_loadable(self, state_dict: dict[str, Any]) -> None:
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups' keys")
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ValueError(
                f"state_dict has {len(saved)} parameter groups, this optimizer has "
                f"{len(self.param_groups)}"
            )
        by_id: dict[Any, Tensor] = {}
        for i, (ours, theirs) in enumerate(zip(self.param_groups, saved)):
            if len(ours["params"]) != len(theirs["params"]):
                raise ValueError(
                    f"parameter group {i} has {len(theirs['params'])} parameters in state_dict "
                    f"but {len(ours['params'])} in this optimizer"
                )
            by_id.update(zip(theirs["params"], ours["params"]))
        for pid, pstate in state_dict["state"].items():
            p = by_id.get(pid)
            if p is None:
                continue
            for key, value in pstate.items():
                if isinstance(value, Tensor) and value.dim() > 0 and value.shape != p.shape:
                    raise ValueError(
                        f"state {key!r} of parameter {pid} has shape {tuple(value.shape)} but "
                        f"the parameter has shape {tuple(p.shape)}: the state_dict belongs to "
                        "a different model"
                    )


def _hypers_of(group: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in group.items() if k not in _NOT_HYPERS}


__all__ = ["AccelOptimizer", "HyperGroup", "check_hyper", "spread"]
