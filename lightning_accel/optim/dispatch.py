"""How a pipeline runs: `impl` -> one executor, chosen and bound to the callbacks once.

An executor is called as `executor(params, states, hypers)` on the parameters of one group that
have gradients. Every executor computes the reference numbers and differs only in speed:

- "per_param": the reference loop, parameter-major: every callback on p1, then on p2, ...
  Sharded (FSDP2) parameters are passed as the DTensors they are.
- "composed": callback-major, each callback once over the group with its multi-tensor form
  (`cb.foreach`), per parameter where it has none. Callback-major order gives the reference
  numbers because a callback only reads and writes its own parameter and that parameter's state.
  On CPU the group runs in cache-sized buckets.
- "foreach": "composed" that refuses a callback without a multi-tensor form.
- "auto" (default): "composed", with each run of built-in callbacks that a torch fused kernel
  computes (SGD, SGD with momentum, Adam/AdamW: see `fused.py`) running as that kernel.
- "compiled": the multi-tensor forms compiled by `torch.compile` (`compiled.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .fused import FusedRun, fused_runs
from .pipeline import foreach_form, missing_forms
from .shards import LocalViews, split_by_layout

IMPLS = ("auto", "composed", "foreach", "per_param", "compiled")
Executor = Callable[[list[Tensor], list[dict], dict[str, Any]], None]


class PerParam:
    """impl="per_param": every callback on every parameter, merging what it returns into state."""

    def __init__(self, cbs: Sequence[Callable]) -> None:
        self.cbs = list(cbs)

    def __reduce__(self):
        return (type(self), (self.cbs,))

    @torch.no_grad()
    def __call__(self, params: list[Tensor], states: list[dict], hypers: dict[str, Any]) -> None:
        for p, state in zip(params, states):
            for cb in self.cbs:
                update = cb(p, **{**state, **hypers})
                if update:
                    state.update(update)


# On CPU the element-wise kernels are bound by memory bandwidth. Running a run of callbacks over a
# bucket of parameters small enough to stay in cache, bucket after bucket, reads each tensor from
# memory about once instead of once per kernel. GPUs gain nothing from it and pay more launches:
# there the group is one bucket.
CPU_BUCKET_NUMEL = 1 << 18


def buckets(params: list[Tensor]) -> list[slice]:
    """Consecutive runs of parameters to step together (see CPU_BUCKET_NUMEL)."""
    if params[0].device.type != "cpu":
        return [slice(0, len(params))]
    out, start, size = [], 0, 0
    for i, p in enumerate(params):
        if size and size + p.numel() > CPU_BUCKET_NUMEL:
            out.append(slice(start, i))
            start, size = i, 0
        size += p.numel()
    out.append(slice(start, len(params)))
    return out


class Composed:
    """impl="composed", "foreach" and "auto" (`fuse=True`): see the module docstring.

    The pipeline is cut once into segments: runs that a fused kernel computes (with `fuse`), and
    runs of callbacks each paired with its multi-tensor form (None where it has none).
    """

    def __init__(self, cbs: Sequence[Callable], fuse: bool = False) -> None:
        self.cbs, self.fuse = list(cbs), fuse
        self.segments: list[FusedRun | list[tuple[Callable, Callable | None]]] = []
        start = 0
        for begin, stop, run in fused_runs(self.cbs) if fuse else []:
            self._add_forms(self.cbs[start:begin])
            self.segments.append(run)
            start = stop
        self._add_forms(self.cbs[start:])

    def _add_forms(self, cbs: list[Callable]) -> None:
        if cbs:
            self.segments.append([(cb, foreach_form(cb)) for cb in cbs])

    def __reduce__(self):
        return (type(self), (self.cbs, self.fuse))

    @torch.no_grad()
    def __call__(self, params: list[Tensor], states: list[dict], hypers: dict[str, Any]) -> None:
        for run_params, run_states in split_by_layout(params, states):
            if run_params:
                self._run(LocalViews(run_params, run_states), hypers)

    def _run(self, views: LocalViews, hypers: dict[str, Any]) -> None:
        form_hypers = views.form_hypers(hypers)
        everyone = list(range(len(views.params)))
        for segment in self.segments:
            if isinstance(segment, FusedRun):
                rest = segment(views.params, views.states, hypers)
                if rest:  # what the kernel cannot take runs through the callbacks' forms
                    pairs = [(cb, foreach_form(cb)) for cb in segment.cbs]
                    self._run_callbacks(pairs, views, rest, form_hypers, hypers)
            else:
                self._run_callbacks(segment, views, everyone, form_hypers, hypers)
        views.commit()

    def _run_callbacks(
        self,
        pairs: list[tuple[Callable, Callable | None]],
        views: LocalViews,
        idx: list[int],
        form_hypers: dict[str, Any],
        hypers: dict[str, Any],
    ) -> None:
        params = [views.params[i] for i in idx]
        for bucket in buckets(params):
            ids = idx[bucket]
            for cb, form in pairs:
                if form is not None:
                    form(
                        [views.params[i] for i in ids],
                        [views.states[i] for i in ids],
                        **form_hypers,
                    )
                    continue
                # A callback without a form sees the parameters as they are (DTensors too).
                views.commit()
                for i in ids:
                    state = views.real_states[i]
                    update = cb(views.originals[i], **{**state, **hypers})
                    if update:
                        state.update(update)
                views.refresh()


def executor_for(impl: str, cbs: Sequence[Callable]) -> Executor:
    """The executor for `impl` (one of IMPLS) running the pipeline `cbs`.

    "auto" and "composed" never fail; "foreach" and "compiled" need a multi-tensor form for every
    callback and say which lack one.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl in ("foreach", "compiled"):
        missing = missing_forms(cbs)
        if missing:
            raise ValueError(
                f"impl={impl!r} needs a multi-tensor form for every callback; missing for "
                f"{missing}. Give those callbacks a `.foreach` form (signature "
                "`(params, states, **hypers) -> None`), or use impl='auto', which runs them "
                "per parameter."
            )
    if impl == "per_param":
        return PerParam(cbs)
    if impl == "compiled":
        from .compiled import compiled_executor  # imports torch._dynamo only when asked for

        return compiled_executor(cbs)
    executor = Composed(cbs, fuse=impl == "auto")
    if impl == "auto" and not any(
        isinstance(s, FusedRun) or any(form for _, form in s) for s in executor.segments
    ):
        return PerParam(cbs)  # nothing to run multi-tensor or fused: the reference loop, as is
    return executor


__all__ = ["IMPLS", "Composed", "PerParam", "executor_for", "buckets"]
