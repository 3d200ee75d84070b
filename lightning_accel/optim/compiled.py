"""impl="compiled": the pipeline's multi-tensor forms compiled by `torch.compile` into one program.

The program is the composed step of ONE flat 1-D buffer of any length (symbolic shape): a large
parameter with its gradient and per-element state, passed as flat views of their memory (nothing
copied), or the small parameters of a group concatenated (copied in and out, which costs less than
a call each; only when every form is element-wise). Every parameter of every group runs through
the same small program, so compiling costs one small graph, not one with a kernel per tensor, and
an optimizer with an equal pipeline (lr_find, then fit) reuses it.

Four decisions keep it from recompiling:
- Hyper-parameters enter as 0-d float64 tensors on the parameters' device, not as Python floats,
  so a schedule that changes `lr` or `mom` every step changes data, not the traced program.
- Step counts stay Python integers, which the program takes as symbolic integers (float state
  would be specialised on: it is kept in 0-d tensors instead).
- Shapes are symbolic: one program for every parameter size.
- The first step of a group runs eagerly: it creates the state buffers, and tracing it would
  compile a program used only once.
A program is specialised again only where the math or torch.compile's guards differ: per-parameter
flags (`do_wd`), a dtype, a parameter of one element (or an empty shard), a parameter whose memory
is not laid out like its gradient's.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import types
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
import torch._dynamo
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from .pipeline import dense_layout, elementwise, foreach_form, pipeline_key
from .shards import LocalViews, split_by_layout


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
            f"impl='compiled' cannot be used: {reason}. Use impl='auto' (fused kernels and "
            "multi-tensor forms, eager) instead."
        )


def _apply_forms(forms: Sequence[Callable], params, states, hypers) -> None:
    for form in forms:
        form(params, states, **hypers)


def _fresh_step_function() -> Callable:
    """A new function object with its own code object running `_apply_forms`.

    torch.compile keeps its cache, and its recompile limit, per code object: one code object per
    pipeline keeps pipelines from evicting each other's programs.
    """
    code = _apply_forms.__code__.replace()
    return types.FunctionType(code, _apply_forms.__globals__, "_compiled_optimizer_step")


class _Program:
    """The compiled step of one pipeline, shared by every optimizer that runs that pipeline."""

    def __init__(self, forms: list[Callable], backend: str) -> None:
        self.forms = forms
        options = INDUCTOR_OPTIONS if backend == "inductor" else None
        self.compiled = torch.compile(
            _fresh_step_function(), backend=backend, dynamic=True, options=options
        )

    def __call__(self, params: list[Tensor], states: list[dict], hypers: dict) -> None:
        self.compiled(self.forms, params, states, hypers)


# - Scalars computed from the step count and the hyper-parameters (debiasing terms) would otherwise
#   be recomputed inside the element-wise loop, a pow and a sqrt per element: realising every
#   multiply-used intermediate computes them once.
# - `vec_isa_ok` trusts the CPU's own report of its vector instructions (torch.cpu reads it)
#   instead of compiling and loading a test program for each instruction set on a cold cache,
#   which costs more than compiling the optimizer step itself.
# - `compile_threads=1` compiles the one small program in this process, instead of first starting
#   a pool of worker processes (each importing torch) to compile it in.
INDUCTOR_OPTIONS: dict[str, Any] = {
    "realize_opcount_threshold": 0,
    "cpp.vec_isa_ok": True,
    "compile_threads": 1,
}
_PROGRAMS: dict[Hashable, _Program] = {}
# torch.compile's backend for impl="compiled"; tests swap in "aot_eager" to trace without codegen.
DEFAULT_BACKEND = "inductor"


# Parameters smaller than this run together, concatenated into one flat buffer per kind, when
# every form is element-wise: copying them costs less than one call of the program each.
SMALL_NUMEL = 1 << 16


class CompiledExecutor:
    """Executor for impl="compiled" (see the module docstring); `backend` is torch.compile's."""

    def __init__(self, cbs: Sequence[Callable], backend: str | None = None) -> None:
        self.cbs = list(cbs)
        self.backend = backend = backend or DEFAULT_BACKEND
        key = (pipeline_key(self.cbs), backend)
        if key not in _PROGRAMS:
            _PROGRAMS[key] = _Program([foreach_form(cb) for cb in self.cbs], backend)
        self._program = _PROGRAMS[key]
        self._batchable = all(elementwise(form) for form in self._program.forms)
        # State keys the pipeline has been seen to create; a parameter whose state lacks one of
        # them is on its first step and runs eagerly.
        self._state_keys: set[str] | None = None
        self._checked: set[str] = set()  # device types known to support compilation

    def __reduce__(self):
        # Optimizers are deep-copied and pickled with their executor; compiled programs are not
        # picklable, so a copy rebuilds them (from the shared cache when it can).
        return (CompiledExecutor, (self.cbs, self.backend))

    @torch.no_grad()
    def __call__(self, params: list[Tensor], states: list[dict], hypers: dict[str, Any]) -> None:
        if not params:
            return
        device = params[0].device
        if device.type not in self._checked:  # before any change, so a failure loses nothing
            _check_available(device)
            self._checked.add(device.type)
        for run_params, run_states in split_by_layout(params, states):
            views = LocalViews(run_params, run_states)
            keys = self._state_keys
            if keys is None or not all(keys <= s.keys() for s in run_states):
                self._run_eager(views, hypers)
            else:
                self._run_compiled(views, hypers)
            views.commit()

    def _run_eager(self, views: LocalViews, hypers: dict) -> None:
        _apply_forms(self._program.forms, views.params, views.states, views.form_hypers(hypers))
        created = set.intersection(*(set(s) for s in views.states))
        self._state_keys = created if self._state_keys is None else self._state_keys | created

    def _run_compiled(self, views: LocalViews, hypers: dict) -> None:
        tensor_hypers = views.form_hypers(_tensorise_hypers(hypers, views.params[0].device))
        together: dict[Hashable, list[int]] = {}
        for i, (p, state) in enumerate(zip(views.params, views.states)):
            _tensorise_floats(state, p.device)
            key = _batch_key(p, state) if self._batchable and p.numel() < SMALL_NUMEL else None
            if key is None:
                self._call(_OneParameter(p, state), tensor_hypers)
            else:
                together.setdefault(key, []).append(i)
        for idx in together.values():
            params, states = [views.params[i] for i in idx], [views.states[i] for i in idx]
            call = _OneParameter(params[0], states[0]) if len(idx) == 1 else _Batch(params, states)
            self._call(call, tensor_hypers)

    def _call(self, call: _OneParameter | _Batch, hypers: dict) -> None:
        self._program([call.param], [call.state], hypers)
        call.write_back()


def _flat(t: Tensor) -> Tensor:
    """A 1-D view of a tensor laid out without gaps, in memory order, detached from `t` so the
    compiled program's guards see it alone, not its base."""
    if not t.is_contiguous():
        t = t.permute(sorted(range(t.dim()), key=lambda d: -t.stride(d)))
    return t.view(-1).detach()


def _flattenable(p: Tensor, tensors: list[Tensor]) -> bool:
    return dense_layout(p) and all(t.stride() == p.stride() for t in tensors)


class _OneParameter:
    """A parameter (with its gradient) and its per-element state as 1-D views of their memory.

    When the parameter, its gradient and its state do not share one gap-free memory layout, they
    keep their shapes (a program specialised for that shape runs them).
    """

    def __init__(self, p: Tensor, state: dict) -> None:
        self.p, self.real = p, state
        per_element = [k for k, v in state.items() if isinstance(v, Tensor) and v.shape == p.shape]
        flat = p.dim() != 1 and _flattenable(p, [p.grad, *(state[k] for k in per_element)])
        view = _flat if flat else Tensor.detach
        self.param = view(p)
        self.param.grad = view(p.grad)
        self.given = {
            k: view(v) if k in per_element else v.detach()
            for k, v in state.items()
            if isinstance(v, Tensor)
        }
        self.state = {**state, **self.given}

    def write_back(self) -> None:
        """Copy into the state what the program created or replaced, in the parameter's shape."""
        for key, value in self.state.items():
            if self.given.get(key) is value or self.real.get(key) is value:
                continue
            if isinstance(value, Tensor) and value.dim() > 0 and value.numel() == self.p.numel():
                value = _shaped_like(value, self.p)
            self.real[key] = value


class _Batch:
    """Several small parameters, their gradients and per-element states, each concatenated into
    one flat buffer in logical element order (see `_batch_key` for what they share);
    `write_back` copies them back."""

    def __init__(self, params: list[Tensor], states: list[dict]) -> None:
        self.params, self.states = params, states
        self.keys = [k for k, v in states[0].items() if isinstance(v, Tensor)]
        grads = [p.grad for p in params]
        self.targets = [params, grads, *([s[k] for s in states] for k in self.keys)]
        self.param = _flatten_dense_tensors(params)
        self.param.grad = _flatten_dense_tensors(grads)
        self.given = {k: _flatten_dense_tensors(ts) for k, ts in zip(self.keys, self.targets[2:])}
        self.state = {**states[0], **self.given}

    def write_back(self) -> None:
        # Everything given may have changed in place, the gradient too (l2_reg adds to it).
        flats = [self.param, self.param.grad, *self.given.values()]
        for targets, flat in zip(self.targets, flats):
            torch._foreach_copy_(targets, _unflatten_dense_tensors(flat, targets))
        for key, value in self.state.items():
            if self.given.get(key) is value or self.states[0].get(key) is value:
                continue
            if isinstance(value, Tensor) and value.dim() == 1 and value.numel() == len(self.param):
                for state, part in zip(self.states, _unflatten_dense_tensors(value, self.params)):
                    state[key] = part.clone()
            else:  # a scalar: the same for every parameter, as its inputs were
                for state in self.states:
                    state[key] = value


def _batch_key(p: Tensor, state: dict) -> Hashable | None:
    """What parameters must share to run concatenated: dtype, device, the state's keys and every
    non-tensor state value (step counts, flags); None when `p` cannot join a batch (a state
    tensor that is not per-element, a value that is not hashable)."""
    items = []
    for key, value in state.items():
        if isinstance(value, Tensor):
            if value.shape != p.shape:
                return None
            value = None
        items.append((key, value))
    key = (p.dtype, p.device, tuple(items))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _shaped_like(flat: Tensor, p: Tensor) -> Tensor:
    """A new flat per-element tensor back in `p`'s shape, with `p`'s memory layout."""
    if flat.dim() == p.dim():
        return flat
    order = sorted(range(p.dim()), key=lambda d: -p.stride(d))
    inverse = sorted(range(p.dim()), key=lambda d: order[d])
    return flat.view([p.shape[d] for d in order]).permute(inverse)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _tensorise_floats(state: dict, device: torch.device) -> None:
    """Float state into 0-d float64 tensors, in place, once: torch.compile specialises on floats.

    Integers (the step counts) stay integers: the program takes them as symbolic integers.
    """
    for key, value in state.items():
        if isinstance(value, float):
            state[key] = torch.tensor(value, dtype=torch.float64, device=device)


def _tensorise_hypers(hypers: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Numeric hyper-parameters as 0-d float64 tensors on `device` (one host-to-device copy)."""
    names = [k for k, v in hypers.items() if _is_number(v)]
    if not names:
        return dict(hypers)
    values = torch.tensor([float(hypers[k]) for k in names], dtype=torch.float64)
    out = dict(hypers)
    # Detached from the vector they come from, so the program's guards see 0-d tensors only.
    out.update(zip(names, (v.detach() for v in values.to(device).unbind())))
    return out


def compiled_executor(cbs: Sequence[Callable], backend: str | None = None) -> CompiledExecutor:
    """The impl="compiled" executor for `cbs`; fails clearly if torch.compile is unavailable."""
    _check_available()
    return CompiledExecutor(cbs, backend)
