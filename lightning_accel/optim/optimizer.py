"""AccelOptimizer: a `torch.optim.Optimizer` that does nothing itself but run optimizer callbacks.

Each callback is called as `cb(p, **{**state, **hypers})` and may return a dict merged into
`opt.state[p]` (the chapter's contract). Hyper-parameters live in `param_groups`, mirrored into
torch's `momentum`/`betas` keys so torch schedulers and Lightning's monitors can read and set them.
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .dispatch import executor_for
from .loading import PARAM_FLAGS, check_loadable, describe_pipeline
from .pipeline import callback_name
from .torch_state import from_torch_state_dict, is_torch_state_dict
from .validation import check_hyper, check_params

# Keys of a param group that are bookkeeping or torch-facing aliases, not our hyper-parameters.
_NOT_HYPERS = frozenset({"params", "param_names", "momentum", "betas"})
# Per-parameter flags that survive `clear_state`.
_KEEP_ON_CLEAR = PARAM_FLAGS


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
        betas = out.pop("betas")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (mom, sqr_mom), got {betas!r}")
        betas = tuple(betas)
        out.setdefault("mom", betas[0])
        if len(betas) > 1:
            out.setdefault("sqr_mom", betas[1])
    if "momentum" in out:
        out.setdefault("mom", out.pop("momentum"))
    return out


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


def _is_named(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)


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
    if all(_is_named(x) for x in items):  # model.named_parameters(), as torch.optim takes it
        return [{"params": items}]
    if all(isinstance(x, (list, tuple)) or inspect.isgenerator(x) for x in items):
        return [{"params": list(x)} for x in items]
    raise TypeError(
        "params must be an iterable of tensors, a list of lists of tensors (one group each) "
        "or a list of dicts with a 'params' key; got a mix of "
        f"{sorted({type(x).__name__ for x in items})}"
    )


def _slice_end(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"the {name} of a slice of hyper-parameter values must be a number, got {value!r}"
        )
    return float(value)


def spread(value: Any, n: int) -> list[Any]:
    """One value per group: a scalar repeats, a list must have `n` items, a slice spreads.

    `slice(a, b)` spreads geometrically from a to b (both must be > 0: a geometric spread from 0
    is not defined); `slice(b)` gives b/10 to all groups but the last, which gets b
    (discriminative learning rates).
    """
    if isinstance(value, slice):
        if value.step is not None or value.stop is None:
            raise ValueError(
                "a slice of hyper-parameter values is slice(stop) or slice(start, stop), "
                f"got {value!r}"
            )
        stop = value.stop
        _slice_end("stop", stop)
        if value.start is None:
            return [stop / 10] * (n - 1) + [stop]
        start = _slice_end("start", value.start)
        if not (start > 0 and float(stop) > 0 and math.isfinite(start) and math.isfinite(stop)):
            raise ValueError(
                f"slice(start, stop) spreads values geometrically from start to stop, so both must "
                f"be finite and > 0; got {value!r}. Use slice(stop) for stop/10 in the earlier "
                "groups, or a list with one value per group"
            )
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
    `impl`: how the pipeline executes (`dispatch.IMPLS`): "auto" (torch's fused kernels where
    they compute the pipeline, multi-tensor forms elsewhere), "composed", "foreach", "per_param"
    or "compiled".
    `allow_complex`: accept complex parameters; only for pipelines whose every callback is
        right on complex numbers (the recipe `SGD` sets it), so it is off by default.
    `defaults`: hyper-parameters, overriding the callbacks' own `.defaults`.

    Every built-in hyper-parameter is range-checked here, in `add_param_group`, `set_hyper` and
    `load_state_dict` (see `validation.HYPER_RANGES`); a refused value changes nothing.
    """

    def __init__(
        self,
        params: Iterable[Any],
        cbs: Sequence[Callable],
        impl: str = "auto",
        allow_complex: bool = False,
        **defaults: Any,
    ) -> None:
        if callable(cbs):
            cbs = [cbs]
        self.cbs = list(cbs)
        for cb in self.cbs:
            if not callable(cb):
                raise TypeError(f"cbs must hold callables, got {cb!r}")
        if not isinstance(allow_complex, bool):
            raise TypeError(f"allow_complex must be True or False, got {allow_complex!r}")
        self.impl = impl
        self.allow_complex = allow_complex
        self._executor = executor_for(impl, self.cbs)
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
        index = len(self.param_groups)
        for name, value in hypers.items():
            check_hyper(name, value, f" (parameter group {index})")
        group.update(_with_aliases(hypers))
        super().add_param_group(group)
        added = self.param_groups[-1]
        try:
            check_params(added["params"], index, added.get("param_names"), self.allow_complex)
            if self.impl == "compiled" and any(p.is_complex() for p in added["params"]):
                raise TypeError(
                    f"parameter group {index} has complex parameters, which torch.compile "
                    "cannot compile this pipeline for; use impl='auto'"
                )
        except TypeError:
            self.param_groups.pop()  # leave the optimizer as it was
            raise
        self.param_groups[-1] = HyperGroup(added)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # torch's load_state_dict rebuilds the groups as plain dicts: restore the mirroring.
        super().__setstate__(state)
        self.__dict__.setdefault("allow_complex", False)  # pickled before it existed
        self.param_groups = [HyperGroup(g) for g in self.param_groups]
        if "_executor" not in self.__dict__:  # unpickled: executors (compiled ones) are rebuilt
            self._executor = executor_for(self.impl, self.cbs)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(
            cbs=self.cbs,
            impl=self.impl,
            allow_complex=self.allow_complex,
            _needs=self._needs,
            _skip_next=self._skip_next,
        )
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
        groups = self.param_groups
        # Every group has the name in the common case; only otherwise ask the callbacks.
        if not all(name in g for g in groups):
            known = self._known_hypers()
            if name not in known:
                raise ValueError(f"unknown hyper-parameter {name!r}; known: {sorted(known)}")
        values = spread(value, len(groups))
        if isinstance(value, (list, tuple, slice)):
            for i, v in enumerate(values):
                check_hyper(name, v, f" (parameter group {i})")
        else:
            check_hyper(name, value)
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
                self._executor(params, states, hypers)
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

    def state_dict(self) -> dict[str, Any]:
        """torch's state_dict plus `pipeline`: the callbacks that made the state, as text, so
        `load_state_dict` can refuse another optimizer's state (and old files still load)."""
        sd = super().state_dict()
        sd["pipeline"] = describe_pipeline(self.cbs)
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's `load_state_dict`, after checking that the state belongs to this pipeline.

        A torch.optim Adam, AdamW, SGD or RMSprop state is translated first (see `torch_state`).
        Anything that does not fit (groups, hyper-parameters and their ranges, per-parameter state
        keys, shapes and types) raises a ValueError naming it, before anything changes.
        """
        if is_torch_state_dict(state_dict):
            state_dict = from_torch_state_dict(state_dict, self)
        check_loadable(self, state_dict)
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "pipeline"})


def _hypers_of(group: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in group.items() if k not in _NOT_HYPERS}


__all__ = ["AccelOptimizer", "HyperGroup", "check_hyper", "spread"]
