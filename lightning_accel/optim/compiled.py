"""impl="compiled": the composed step traced by `torch.compile` into fused kernels.

What is compiled is the pipeline of multi-tensor forms (`foreach.py`), so inductor sees the
whole step of a group at once and fuses the callbacks' element-wise work.

Three decisions keep it from recompiling:
- Hyper-parameters enter as 0-d float64 tensors on the parameters' device, not as Python floats,
  so a schedule that changes `lr` or `mom` every step changes data, not the traced program.
- Numeric state (the per-parameter `step`) is kept in 0-d tensors for the same reason, as
  torch.optim's fused and capturable optimizers keep theirs.
- The first step of a group runs eagerly: it creates the state buffers, and tracing it would
  compile a program used only once.
Compiled programs are cached per pipeline and group structure (shapes, dtypes, devices), shared
by every optimizer running that pipeline, so re-creating an optimizer (lr_find, then fit) does
not compile again.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import types
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from typing import Any

import torch
import torch._dynamo
from torch import Tensor

from .execution import foreach_form


def compile_unavailable_reason(device: torch.device | None = None) -> str | None:
    """Why `torch.compile` cannot run here (None when it can)."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    try:
        if not torch._dynamo.is_dynamo_supported():
            return "torch.compile is not supported on this Python/platform"
    except Exception as exc:  # is_dynamo_supported raises with the reason on some versions
        return f"torch.compile is not supported here: {exc}"
    if device is not None and device.type == "cuda" and importlib.util.find_spec("triton") is None:
        return "torch.compile on CUDA needs the triton package"
    if device is not None and device.type == "cpu":
        compilers = [os.environ.get("CXX"), "g++", "c++", "clang++"]
        if not any(c and shutil.which(c) for c in compilers):
            return "torch.compile on CPU needs a C++ compiler (g++ or clang++) on the PATH"
    return None


def _check_available(device: torch.device | None = None) -> None:
    reason = compile_unavailable_reason(device)
    if reason is not None:
        raise RuntimeError(
            f"impl='compiled' cannot be used: {reason}. Use impl='auto' (multi-tensor, eager) "
            "instead."
        )


def _apply_forms(forms: Sequence[Callable], params, states, hypers) -> None:
    for form in forms:
        form(params, states, **hypers)


def _fresh_step_function() -> Callable:
    """A new function object with its own code object running `_apply_forms`.

    torch.compile keeps its cache, and its recompile limit, per code object: one code object per
    pipeline and group structure keeps pipelines from evicting each other's programs.
    """
    code = _apply_forms.__code__.replace()
    return types.FunctionType(code, _apply_forms.__globals__, "_compiled_optimizer_step")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


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


class _Pipeline:
    """The compiled programs of one pipeline, one per group structure."""

    def __init__(self, forms: list[Callable], backend: str) -> None:
        self.forms = forms
        self.backend = backend
        self.programs: dict[Hashable, Callable] = {}

    def program(self, params: list[Tensor]) -> Callable:
        structure = tuple((p.shape, p.dtype, p.device) for p in params)
        fn = self.programs.get(structure)
        if fn is None:
            options = INDUCTOR_OPTIONS if self.backend == "inductor" else None
            compiled = torch.compile(_fresh_step_function(), backend=self.backend, options=options)
            fn = self.programs[structure] = partial(compiled, self.forms)
        return fn


# Per-parameter scalars (debias terms from the step counts) are small vectors that inductor would
# otherwise recompute inside every element-wise loop (a pow and a sqrt per vector of values:
# 3-4x slower kernels). Realising any multiply-used intermediate computes them once.
INDUCTOR_OPTIONS = {"realize_opcount_threshold": 0}
_PIPELINES: dict[Hashable, _Pipeline] = {}
# torch.compile's backend for impl="compiled"; tests swap in "aot_eager" to trace without codegen.
DEFAULT_BACKEND = "inductor"


class CompiledExecutor:
    """Executor for impl="compiled" (see the module docstring); `backend` is torch.compile's."""

    def __init__(self, cbs: Sequence[Callable], backend: str | None = None) -> None:
        self.cbs = list(cbs)
        self.backend = backend = backend or DEFAULT_BACKEND
        key = (tuple(_callback_key(cb) for cb in self.cbs), backend)
        if key not in _PIPELINES:
            _PIPELINES[key] = _Pipeline([foreach_form(cb) for cb in self.cbs], backend)
        self._pipeline = _PIPELINES[key]
        # State keys the pipeline has been seen to create; a group whose states lack one of them
        # is on its first step and runs eagerly.
        self._state_keys: set[str] | None = None
        self._checked: set[str] = set()  # device types known to support compilation

    def __reduce__(self):
        # Optimizers are deep-copied and pickled with their executor; compiled programs are not
        # picklable, so a copy rebuilds them (from the shared cache when it can).
        return (CompiledExecutor, (self.cbs, self.backend))

    def __call__(
        self,
        cbs: Sequence[Callable],
        params: list[Tensor],
        states: list[dict],
        hypers: dict[str, Any],
    ) -> None:
        if not params:
            return
        device = params[0].device
        if device.type not in self._checked:  # before any change, so a failure loses nothing
            _check_available(device)
            self._checked.add(device.type)
        if self._state_keys is None or not all(self._state_keys <= s.keys() for s in states):
            self._run_eager(params, states, hypers)
            return
        _tensorise_states(params, states)
        with torch.no_grad():
            self._pipeline.program(params)(params, states, _tensorise_hypers(hypers, device))

    def _run_eager(self, params: list[Tensor], states: list[dict], hypers: dict) -> None:
        with torch.no_grad():
            _apply_forms(self._pipeline.forms, params, states, hypers)
        created = set.intersection(*(set(s) for s in states))
        self._state_keys = created if self._state_keys is None else self._state_keys | created


def _tensorise_states(params: list[Tensor], states: list[dict]) -> None:
    """Move numeric state (e.g. `step`) into 0-d float64 tensors, in place, once."""
    for p, state in zip(params, states):
        for key, value in state.items():
            if _is_number(value):
                state[key] = torch.tensor(value, dtype=torch.float64, device=p.device)


def _tensorise_hypers(hypers: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Numeric hyper-parameters as 0-d float64 tensors on `device` (one host-to-device copy)."""
    names = [k for k, v in hypers.items() if _is_number(v)]
    if not names:
        return dict(hypers)
    values = torch.tensor([float(hypers[k]) for k in names], dtype=torch.float64)
    out = dict(hypers)
    out.update(zip(names, values.to(device).unbind()))
    return out


def compiled_executor(cbs: Sequence[Callable], backend: str | None = None) -> CompiledExecutor:
    """The impl="compiled" executor for `cbs`; fails clearly if torch.compile is unavailable."""
    _check_available()
    return CompiledExecutor(cbs, backend)
