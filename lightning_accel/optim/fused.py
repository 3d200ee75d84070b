"""Torch's fused optimizer kernels, for the runs of a pipeline that compute exactly what they do.

A run is recognised by its callbacks and their bound arguments, never by a recipe's name:
- SGD: [`weight_decay` | `l2_reg`] + `sgd_step` -> `torch._fused_sgd_`;
- SGD with momentum: [decay] + `average_grad` + `momentum_step` -> `torch._fused_sgd_` (damped
  or not, as `average_grad`'s `dampening` says);
- Adam: [decay] + `average_grad(dampening=True)`, `average_sqr_grad`, `step_stat` (any order) +
  `adam_step` -> `torch._fused_adamw_` (decoupled decay) or `torch._fused_adam_` (L2 or none).
A user callback is never part of a run, and one inside a run's span breaks it; the runs around a
user callback still run fused, as the callback-major order of "auto" and "composed" allows (each
callback touches only its own parameter and that parameter's state). An L2 run fuses only at the
end of a pipeline: `l2_reg` adds `wd * p` to `p.grad`, the kernels do not, and a later callback
could read the gradient.

torch's other fused kernel, `_fused_adagrad_`, computes RMSProp with `sqr_mom=1` and no
dampening, which the optimizer's hyper-parameter checks refuse (`sqr_mom` must be < 1), so no
pipeline reaches it.

The state stays the chapter's (`grad_avg`, `sqr_avg`, an integer `step`), so checkpoints move
between implementations. What a kernel cannot take runs through the callbacks' multi-tensor forms
instead, decided at each step: hyper-parameters that are not plain numbers, a momentum of 0 (the
kernel would keep no `grad_avg`), a group-level `dampening` that changes the run's meaning, and,
per parameter, dtypes the kernels lack or a gradient or state laid out unlike the parameter.
Per-parameter `do_wd=False` splits the parameters into a decayed and an undecayed kernel call.
Unlike `l2_reg`, the kernels leave `p.grad` as it was (as torch.optim does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from . import stats, steps
from .pipeline import base_function, bound_arguments, dense_layout, signature_defaults

try:
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    FUSED_DEVICES = frozenset(_get_fused_kernels_supported_devices())
except ImportError:  # older torch: the two device types torch has always had fused kernels for
    FUSED_DEVICES = frozenset({"cpu", "cuda"})

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_DECAYS = {steps.weight_decay: "decoupled", steps.l2_reg: "l2"}
_ADAM_STATS = {stats.average_grad, stats.average_sqr_grad, stats.step_stat}


def _kernels_available() -> bool:
    return all(hasattr(torch, k) for k in ("_fused_sgd_", "_fused_adam_", "_fused_adamw_"))


class FusedRun:
    """Consecutive callbacks `cbs` of a pipeline that one torch fused kernel computes.

    Called like an executor on plain tensors; returns the indices of the parameters it left
    for the callbacks' own forms.
    """

    def __init__(self, cbs: Sequence[Callable], kind: str, decay: str | None) -> None:
        self.cbs, self.kind, self.decay = list(cbs), kind, decay
        self._bound = [bound_arguments(cb) or {} for cb in self.cbs]
        self._defaults = [signature_defaults(cb) for cb in self.cbs]
        # The per-element state the kernel keeps (besides the step count).
        self._buffers = {"sgd": (), "sgd_momentum": ("grad_avg",)}.get(
            kind, ("grad_avg", "sqr_avg")
        )
        self._hyper_names = ["lr"] + {"sgd": [], "sgd_momentum": ["mom"]}.get(
            kind, ["mom", "sqr_mom", "eps"]
        )
        if decay:
            self._hyper_names.append("wd")

    def __repr__(self) -> str:
        return f"FusedRun({self.kind}, decay={self.decay})"

    def _arg(self, base: Callable, name: str, hypers: dict[str, Any]) -> Any:
        """The value callback `base` gets for `name`: the group's, else bound, else default."""
        if name in hypers:
            return hypers[name]
        i = next(i for i, cb in enumerate(self.cbs) if base_function(cb) is base)
        return self._bound[i].get(name, self._defaults[i].get(name))

    def damped(self, hypers: dict[str, Any]) -> bool:
        """Whether both of Adam's averages are damped, as its kernel computes them."""
        return bool(
            self._arg(stats.average_grad, "dampening", hypers)
            and self._arg(stats.average_sqr_grad, "dampening", hypers)
        )

    def __call__(self, params: list[Tensor], states: list[dict], hypers: dict[str, Any]) -> list:
        h = {name: hypers.get(name) for name in self._hyper_names}
        if not all(_is_number(v) for v in h.values()):
            return list(range(len(params)))
        if self.kind == "sgd_momentum":
            if h["mom"] == 0:  # the kernel keeps no buffer without momentum
                return list(range(len(params)))
            damped = bool(self._arg(stats.average_grad, "dampening", hypers))
            h["dampening"] = h["mom"] if damped else 0.0
        if self.kind == "adam" and not self.damped(hypers):
            return list(range(len(params)))
        do_wd_default = self.decay and self._arg(base_function(self.cbs[0]), "do_wd", {})
        rest, batches = [], {}
        for i, (p, state) in enumerate(zip(params, states)):
            if not self._takes(p, state):
                rest.append(i)
                continue
            decayed = bool(self.decay and h["wd"] != 0) and bool(
                hypers.get("do_wd", state.get("do_wd", do_wd_default))
            )
            step = int(state.get("step", 0)) + 1 if self.kind == "adam" else None
            batches.setdefault((p.device, p.dtype, decayed, step), []).append(i)
        for (_, _, decayed, step), idx in batches.items():
            self._run([params[i] for i in idx], [states[i] for i in idx], h, decayed, step)
        return rest

    def _takes(self, p: Tensor, state: dict) -> bool:
        """Whether the kernel computes what the callbacks would for this parameter: the kernels
        walk the parameter, its gradient and its state element by element in memory order."""
        g = p.grad
        if p.device.type not in FUSED_DEVICES or p.dtype not in _KERNEL_DTYPES:
            return False
        if not isinstance(state.get("step", 0), (int, Tensor)):
            return False
        tensors = [g] + [state[k] for k in self._buffers if state.get(k) is not None]
        if not all(
            isinstance(t, Tensor) and t.dtype == p.dtype and t.device == p.device for t in tensors
        ):
            return False
        if p.is_contiguous() and all(t.is_contiguous() for t in tensors):
            return True  # the common case, without comparing strides
        return dense_layout(p) and all(t.stride() == p.stride() for t in tensors)

    def _run(
        self, params: list[Tensor], states: list[dict], h: dict, decayed: bool, step: int | None
    ) -> None:
        grads = [p.grad for p in params]
        wd = h["wd"] if decayed else 0.0
        if self.decay == "decoupled" and decayed and self.kind != "adam":
            torch._foreach_mul_(params, 1 - h["lr"] * wd)  # weight_decay, before the SGD kernel
            wd = 0.0
        if self.kind.startswith("sgd"):
            bufs = _state(params, states, "grad_avg") if self.kind == "sgd_momentum" else []
            torch._fused_sgd_(
                params,
                grads,
                bufs,
                weight_decay=wd,
                momentum=h.get("mom", 0.0),
                lr=h["lr"],
                dampening=h.get("dampening", 0.0),
                nesterov=False,
                maximize=False,
                # Zero buffers make the first step mom * 0 + (1 - dampening) * grad, as
                # average_grad computes it (torch's own first step would copy the gradient).
                is_first_step=False,
            )
            return
        kernel = torch._fused_adamw_ if self.decay == "decoupled" else torch._fused_adam_
        step_t = torch.tensor(float(step), dtype=torch.float32, device=params[0].device)
        kernel(
            params,
            grads,
            _state(params, states, "grad_avg"),
            _state(params, states, "sqr_avg"),
            [],
            [step_t] * len(params),
            lr=h["lr"],
            beta1=h["mom"],
            beta2=h["sqr_mom"],
            weight_decay=wd,
            eps=h["eps"],
            amsgrad=False,
            maximize=False,
        )
        for state in states:
            state["step"] = step


def _state(params: list[Tensor], states: list[dict], key: str) -> list[Tensor]:
    out = []
    for p, state in zip(params, states):
        if state.get(key) is None:
            state[key] = torch.zeros_like(p)
        out.append(state[key])
    return out


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def fused_runs(cbs: Sequence[Callable]) -> list[tuple[int, int, FusedRun]]:
    """The runs `(start, stop, run)` of `cbs` that a torch fused kernel computes, in order."""
    if not _kernels_available():
        return []
    bases = [base_function(cb) if bound_arguments(cb) is not None else None for cb in cbs]
    out, i = [], 0
    while i < len(cbs):
        match = _match(bases, i)
        if match is None:
            i += 1
            continue
        stop, kind, decay = match
        run = FusedRun(cbs[i:stop], kind, decay)
        if kind == "adam" and not run.damped({}):
            i += 1  # an undamped average is not Adam's
            continue
        if decay == "l2" and stop < len(cbs):
            # l2_reg adds wd * p to p.grad, the kernels do not: a later callback could read it.
            i += 1
            continue
        out.append((i, stop, run))
        i = stop
    return out


def _match(bases: list, i: int) -> tuple[int, str, str | None] | None:
    decay = _DECAYS.get(bases[i])
    j = i + (decay is not None)
    rest = bases[j:]
    if rest[:1] == [steps.sgd_step]:
        return j + 1, "sgd", decay
    if rest[:2] == [stats.average_grad, steps.momentum_step]:
        return j + 2, "sgd_momentum", decay
    if len(rest) >= 4 and set(rest[:3]) == _ADAM_STATS and rest[3] is steps.adam_step:
        return j + 4, "adam", decay
    return None


__all__ = ["FusedRun", "fused_runs", "FUSED_DEVICES"]
