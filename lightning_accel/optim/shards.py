"""Sharded parameters (FSDP2's DTensors): plain-tensor views for the fast executors.

Under `fully_shard` each parameter, its gradient and the optimizer state built from them are
DTensors, each process holding one shard. Element-wise math on the shards is the math on the whole
parameter, so the multi-tensor forms, torch's fused kernels and the compiled step run on the
plain local tensors (no DTensor dispatch per operation); what reduces over a parameter (LARC's and
LAMB's norms) reduces over the `shard_groups` too (`tensor_lists.whole_norms`). The state stays
DTensors sharded like their parameter, so `torch.distributed.checkpoint` saves and loads it.
User callbacks without a multi-tensor form still see the DTensors themselves.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from torch import Tensor

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch built without distributed support
    DTensor = None


def is_sharded(p: Tensor) -> bool:
    return DTensor is not None and isinstance(p, DTensor)


def _layout(p: Tensor) -> Hashable:
    """Parameters with equal layouts run together: plain tensors, or DTensors on one mesh with
    one placement."""
    return (p.device_mesh, tuple(p.placements)) if is_sharded(p) else None


def split_by_layout(
    params: list[Tensor], states: list[dict]
) -> list[tuple[list[Tensor], list[dict]]]:
    """The parameters (and states) of a group in runs of equal layout, in order."""
    layouts = [_layout(p) for p in params]
    if all(layout is None for layout in layouts):
        return [(params, states)]
    runs: dict[Hashable, tuple[list[Tensor], list[dict]]] = {}
    for p, s, layout in zip(params, states, layouts):
        ps, ss = runs.setdefault(layout, ([], []))
        ps.append(p)
        ss.append(s)
    return list(runs.values())


class LocalViews:
    """Plain-tensor views of parameters (with `.grad`) and their state, for one layout run.

    For plain parameters the views are the parameters and states themselves. For DTensors,
    `params` are aliases of the local shards and `states` dicts of local tensors; `commit()`
    writes the state a form created or replaced back as DTensors sharded like the parameter,
    `refresh()` re-reads the real state (after a per-parameter callback changed it).
    """

    def __init__(self, params: list[Tensor], states: list[dict]) -> None:
        self.originals, self.real_states = params, states
        self.sharded = bool(params) and is_sharded(params[0])
        self.shard_groups: tuple = ()
        if not self.sharded:
            self.params, self.states = params, states
            return
        p0 = params[0]
        self.shard_groups = tuple(
            p0.device_mesh.get_group(dim)
            for dim, placement in enumerate(p0.placements)
            if placement.is_shard()
        )
        self.params = []
        for p in params:
            local = p.to_local().detach()
            local.grad = p.grad.to_local().detach()
            self.params.append(local)
        self.refresh()

    def refresh(self) -> None:
        if self.sharded:
            self.states = [{k: _local(v) for k, v in s.items()} for s in self.real_states]
            self._given = [dict(s) for s in self.states]

    def commit(self) -> None:
        if not self.sharded:
            return
        for p, local_p, real, local, given in zip(
            self.originals, self.params, self.real_states, self.states, self._given
        ):
            for key, value in local.items():
                if given.get(key) is value:
                    continue  # the same shard, changed in place (or not at all)
                real[key] = _like_param(value, p, local_p)
        self._given = [dict(s) for s in self.states]

    def form_hypers(self, hypers: dict[str, Any]) -> dict[str, Any]:
        """The forms' keyword arguments: the hyper-parameters, and `shard_groups` for shards."""
        return {**hypers, "shard_groups": self.shard_groups} if self.sharded else hypers


def _local(value: Any) -> Any:
    return value.to_local() if is_sharded(value) else value


def _like_param(value: Any, p: Tensor, local_p: Tensor) -> Any:
    """A state value created from a shard: a DTensor sharded like `p` when it is per-element."""
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape == local_p.shape:
        return DTensor.from_local(
            value, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride()
        )
    return value
