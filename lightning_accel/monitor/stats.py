"""Per-layer statistics of an optimizer step, computed from the parameters and the optimizer state.

The monitor takes a `StepSnapshot` just before a step it logs and turns it into per-layer numbers
just after. Each statistic aggregates the parameter tensors of a layer (see `layers.py`):

- ``grad_norm``: the L2 norm of the layer's gradient at the step;
- ``grad_avg_norm``: the L2 norm of the momentum buffer after the step;
- ``sqr_avg_sqrt_mean``: the mean over all elements of ``sqrt(sqr_avg)``, RMSProp's denominator;
- ``update_ratio``: ``||w_after - w_before|| / ||w_before||``, how much the step moved the layer;
- ``step_size``: ``||w_after - w_before|| / ||grad||``, the step taken per unit of gradient
  (the learning rate for plain SGD, larger or smaller where the optimizer adapts it);
- ``trust_ratio``: the layer-wise trust ratio of LAMB (state ``trust_ratio``) or LARC
  (state ``local_lr`` divided by the group's lr), averaged over the layer's tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .histograms import BINS, SAMPLE, Histogram, clamped_sqrt, histograms

# The chapter's state names first, then torch.optim's names for the same running averages, so
# the monitor reads torch's Adam, SGD and RMSprop as well as AccelOptimizer.
GRAD_AVG_KEYS = ("grad_avg", "exp_avg", "momentum_buffer")
SQR_AVG_KEYS = ("sqr_avg", "exp_avg_sq", "square_avg")

STATS = (
    "grad_norm",
    "grad_avg_norm",
    "sqr_avg_sqrt_mean",
    "update_ratio",
    "step_size",
    "trust_ratio",
)


@dataclass
class StepSnapshot:
    """What is known just before a logged step: the parameters, their layers, grads and weights."""

    step: int
    params: list[Tensor]
    layer_names: list[str]
    layer_ids: Tensor  # long, one entry per parameter: index into layer_names
    layer_of: list[int]  # the same on the host, read without a transfer
    lrs: list[float]  # the lr of each parameter's group for this step
    grad_sq_norms: Tensor  # squared L2 norm of each parameter's gradient
    weights: list[Tensor] | None  # copies of the parameters before the step
    weight_sq_norms: Tensor | None = None  # squared L2 norm of each parameter before the step
    _state: str = "weights"  # what `weights` holds now: "weights", "undo" or "updates"

    def undo_updates(self) -> list[Tensor]:
        """``w_before - w_after`` per parameter (or the updates themselves, if already asked
        for), computed in place of the copies: norms do not care about the sign."""
        if self._state == "weights":
            torch._foreach_sub_(self.weights, [p.detach() for p in self.params])
            self._state = "undo"
        return self.weights

    def updates(self) -> list[Tensor]:
        """``w_after - w_before`` per parameter, in place of the copies."""
        self.undo_updates()
        if self._state == "undo":
            torch._foreach_neg_(self.weights)
            self._state = "updates"
        return self.weights


def take_snapshot(
    step: int,
    params: Sequence[Tensor],
    layer_names: Sequence[str],
    layer_ids: Sequence[int],
    lrs: Sequence[float],
    copy_weights: bool = True,
    copy_into: Sequence[Tensor] | None = None,
) -> StepSnapshot:
    """Record gradient norms (and, if asked, a copy of the weights) before the optimizer steps.

    `copy_into`: buffers shaped like `params` to copy the weights into, so that a monitor
    logging many steps reuses one copy rather than allocating one per step.
    """
    params = list(params)
    grads = [p.grad.detach() for p in params]
    device = params[0].device if params else torch.device("cpu")
    grad_sq = torch.stack(torch._foreach_norm(grads)).float() ** 2 if grads else torch.zeros(0)
    weights = None
    if copy_weights and params:
        detached = [p.detach() for p in params]
        if copy_into is None:
            weights = [w.clone() for w in detached]
        else:
            weights = list(copy_into)
            torch._foreach_copy_(weights, detached)
    weight_sq = _norms(weights) ** 2 if weights else None
    return StepSnapshot(
        step=step,
        params=params,
        layer_names=list(layer_names),
        layer_ids=torch.as_tensor(list(layer_ids), dtype=torch.long, device=device),
        layer_of=list(layer_ids),
        lrs=list(lrs),
        grad_sq_norms=grad_sq,
        weights=weights,
        weight_sq_norms=weight_sq,
    )


def _norms(tensors: list[Tensor]) -> Tensor:
    return torch.stack(torch._foreach_norm(tensors)).float()


def _per_layer(values: Tensor, ids: Tensor, n_layers: int) -> Tensor:
    """Sum per-parameter values into their layers."""
    out = torch.zeros(n_layers, dtype=values.dtype, device=values.device)
    return out.index_add_(0, ids, values)


def _state_tensor(state: dict, keys: Sequence[str]) -> Tensor | None:
    for key in keys:
        value = state.get(key)
        if isinstance(value, Tensor) and value.numel() > 0:
            return value
    return None


def _trust_ratio(state: dict, lr: float) -> Tensor | None:
    # Kept as tensors: converting each to a float would synchronise with the GPU per parameter.
    if "trust_ratio" in state:
        return torch.as_tensor(state["trust_ratio"], dtype=torch.float32).reshape(())
    if "local_lr" in state and lr != 0:
        return torch.as_tensor(state["local_lr"], dtype=torch.float32).reshape(()) / lr
    return None


def layer_stats(snapshot: StepSnapshot, states: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Every statistic of `STATS` that applies, as ``{stat: {layer: value}}``, after the step.

    `states` are the optimizer's per-parameter state dicts, in the order of ``snapshot.params``.
    A layer is left out of a statistic that does not apply to it (no momentum buffer, a zero
    denominator), rather than reported as 0 or NaN.
    """
    n = len(snapshot.layer_names)
    if not snapshot.params:
        return {}
    ids = snapshot.layer_ids
    found: dict[str, Tensor] = {}
    present: dict[str, Tensor] = {}

    grad_sq = _per_layer(snapshot.grad_sq_norms, ids, n)
    found["grad_norm"] = grad_sq.sqrt()
    has_params = _per_layer(torch.ones(len(ids), device=ids.device), ids, n) > 0
    present["grad_norm"] = has_params

    if snapshot.weights is not None:
        delta_sq = _per_layer(_norms(snapshot.undo_updates()) ** 2, ids, n)
        weight_sq = _per_layer(snapshot.weight_sq_norms, ids, n)
        found["update_ratio"] = (delta_sq / weight_sq).sqrt()
        present["update_ratio"] = weight_sq > 0
        found["step_size"] = (delta_sq / grad_sq).sqrt()
        present["step_size"] = (grad_sq > 0) & has_params

    avg_idx, avgs = [], []
    sqr_idx, sqrs = [], []
    trust_idx, trusts = [], []
    for i, state in enumerate(states):
        avg = _state_tensor(state, GRAD_AVG_KEYS)
        if avg is not None:
            avg_idx.append(i)
            avgs.append(avg)
        sqr = _state_tensor(state, SQR_AVG_KEYS)
        if sqr is not None:
            sqr_idx.append(i)
            sqrs.append(sqr)
        trust = _trust_ratio(state, snapshot.lrs[i])
        if trust is not None:
            trust_idx.append(i)
            trusts.append(trust)

    if avgs:
        sel = ids[torch.as_tensor(avg_idx, device=ids.device)]
        found["grad_avg_norm"] = _per_layer(_norms(avgs) ** 2, sel, n).sqrt()
        present["grad_avg_norm"] = _per_layer(torch.ones(len(sel), device=ids.device), sel, n) > 0
    if sqrs:
        sel = ids[torch.as_tensor(sqr_idx, device=ids.device)]
        sums = _sqrt_sums(sqrs)
        counts = torch.tensor([float(s.numel()) for s in sqrs], device=sums.device)
        numel = _per_layer(counts, sel, n)
        found["sqr_avg_sqrt_mean"] = _per_layer(sums, sel, n) / numel.clamp(min=1)
        present["sqr_avg_sqrt_mean"] = numel > 0
    if trusts:
        sel = ids[torch.as_tensor(trust_idx, device=ids.device)]
        values = torch.stack([t.to(ids.device) for t in trusts])
        count = _per_layer(torch.ones_like(values), sel, n)
        found["trust_ratio"] = _per_layer(values, sel, n) / count.clamp(min=1)
        present["trust_ratio"] = count > 0

    names = [stat for stat in STATS if stat in found]
    # One transfer for every statistic: on a GPU each .tolist() is a synchronisation.
    table = torch.stack(
        [found[stat].float() for stat in names] + [present[stat].float() for stat in names]
    ).tolist()
    result: dict[str, dict[str, float]] = {}
    for k, stat in enumerate(names):
        values, keep = table[k], table[len(names) + k]
        result[stat] = {
            name: value for name, value, k in zip(snapshot.layer_names, values, keep) if k
        }
    return result


def _sqrt_sums(tensors: Sequence[Tensor]) -> Tensor:
    """``sum(sqrt(t))`` for each tensor, over every element: the roots go into one scratch buffer
    the size of the largest tensor (torch's 1/2-"norm" needs none, but is several times slower),
    zeros taken as `histograms.TINY` (see `clamped_sqrt`)."""
    largest = max(t.numel() for t in tensors)
    scratch = torch.empty(largest, dtype=torch.float32, device=tensors[0].device)
    sums = []
    for t in tensors:
        out = scratch[: t.numel()]
        sums.append(clamped_sqrt(t.detach().reshape(-1).to(torch.float32), out).sum())
    return torch.stack(sums)


HISTOGRAMS = ("weight", "grad", "update", "grad_avg", "sqr_avg_sqrt")


def layer_histograms(
    snapshot: StepSnapshot,
    states: Sequence[dict],
    bins: int = BINS,
    kinds: Sequence[str] = HISTOGRAMS,
    sample: int | None = SAMPLE,
) -> dict[str, dict[str, Histogram]]:
    """Histograms, per layer, of the values behind the statistics, after the step:
    ``{kind: {layer: Histogram}}``; buckets of tensors over `sample` elements from a sample.

    Kinds (`HISTOGRAMS`): ``weight`` (after the step), ``grad``, ``update`` (needs the weight
    copy), ``grad_avg`` and ``sqr_avg_sqrt`` (the square root of ``sqr_avg``). A layer whose
    values are not all finite has no histogram of that kind.
    """
    ids = snapshot.layer_of
    n = len(snapshot.layer_names)
    groups: dict[str, list[list[Tensor]]] = {}

    def add(kind: str, i: int, tensor: Tensor) -> None:
        if kind in kinds:
            groups.setdefault(kind, [[] for _ in range(n)])[ids[i]].append(tensor)

    updates = snapshot.updates() if snapshot.weights is not None and "update" in kinds else None
    for i, (p, state) in enumerate(zip(snapshot.params, states)):
        add("weight", i, p.detach())
        if p.grad is not None:
            add("grad", i, p.grad)
        if updates is not None:
            add("update", i, updates[i])
        avg = _state_tensor(state, GRAD_AVG_KEYS)
        if avg is not None:
            add("grad_avg", i, avg)
        sqr = _state_tensor(state, SQR_AVG_KEYS)
        if sqr is not None:
            add("sqr_avg_sqrt", i, sqr)
    order = [(kind, j) for kind in HISTOGRAMS if kind in groups for j in range(n)]
    found = histograms(
        [groups[kind][j] for kind, j in order],
        bins,
        roots=[kind == "sqr_avg_sqrt" for kind, _ in order],
        sample=sample,
    )
    result: dict[str, dict[str, Histogram]] = {}
    for (kind, j), h in zip(order, found):
        if h is not None:
            result.setdefault(kind, {})[snapshot.layer_names[j]] = h
    return result
