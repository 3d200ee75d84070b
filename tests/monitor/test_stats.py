"""Per-layer statistics against a float64 computation done element by element."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_accel.monitor.stats import layer_histograms, layer_stats, take_snapshot


def _norm(tensors):
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in tensors))


@settings(max_examples=25, deadline=None)
@given(
    shapes=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    layer_of=st.lists(st.integers(0, 2), min_size=5, max_size=5),
    seed=st.integers(0, 2**16),
)
def test_statistics_match_the_definitions(shapes, layer_of, seed):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(n, 2, generator=gen).requires_grad_() for n in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    ids = layer_of[: len(params)]
    used = sorted(set(ids))
    names = [f"layer{i}" for i in range(3)]
    lrs = [0.1 * (i + 1) for i in range(len(params))]
    snap = take_snapshot(7, params, names, ids, lrs)

    # Some optimizer step, then some state: only every other parameter has a momentum buffer.
    before = [p.detach().clone().double() for p in params]
    with torch.no_grad():
        for p in params:
            p.sub_(0.3 * p.grad + 0.01 * torch.randn(p.shape, generator=gen))
    states = []
    for i, p in enumerate(params):
        state = {"sqr_avg": torch.rand(p.shape, generator=gen)}
        if i % 2 == 0:
            state["grad_avg"] = torch.randn(p.shape, generator=gen)
            state["trust_ratio"] = torch.tensor(0.5 + i)
        states.append(state)

    stats = layer_stats(snap, states)
    assert snap.step == 7
    for layer in used:
        name = names[layer]
        mine = [i for i, j in enumerate(ids) if j == layer]
        grad = _norm([params[i].grad for i in mine])
        delta = _norm([params[i].detach().double() - before[i] for i in mine])
        weight = _norm([before[i] for i in mine])
        assert math.isclose(stats["grad_norm"][name], grad, rel_tol=1e-5)
        assert math.isclose(stats["update_ratio"][name], delta / weight, rel_tol=1e-4)
        assert math.isclose(stats["step_size"][name], delta / grad, rel_tol=1e-4)
        roots = torch.cat([states[i]["sqr_avg"].double().sqrt().flatten() for i in mine])
        assert math.isclose(stats["sqr_avg_sqrt_mean"][name], float(roots.mean()), rel_tol=1e-5)
        with_avg = [i for i in mine if "grad_avg" in states[i]]
        if with_avg:
            expected = _norm([states[i]["grad_avg"] for i in with_avg])
            assert math.isclose(stats["grad_avg_norm"][name], expected, rel_tol=1e-5)
            trust = sum(0.5 + i for i in with_avg) / len(with_avg)
            assert math.isclose(stats["trust_ratio"][name], trust, rel_tol=1e-6)
        else:
            # No momentum buffer in this layer: left out, not reported as zero.
            assert name not in stats["grad_avg_norm"]
            assert name not in stats["trust_ratio"]
    # Layers without parameters never appear.
    assert set(stats["grad_norm"]) == {names[i] for i in used}


def test_torch_state_names_and_larc_local_lr_are_read():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    w.grad = torch.tensor([0.0, 2.0])
    snap = take_snapshot(0, [w], ["fc"], [0], [0.5])
    states = [
        {
            "exp_avg": torch.tensor([1.0, 1.0]),
            "exp_avg_sq": torch.tensor([4.0, 16.0]),
            "local_lr": torch.tensor(0.125),
        }
    ]
    stats = layer_stats(snap, states)
    assert math.isclose(stats["grad_avg_norm"]["fc"], math.sqrt(2), rel_tol=1e-6)
    assert math.isclose(stats["sqr_avg_sqrt_mean"]["fc"], 3.0, rel_tol=1e-6)
    assert math.isclose(stats["trust_ratio"]["fc"], 0.25, rel_tol=1e-6)  # LARC: local_lr / lr
    # Nothing moved: the update ratio and step size are zero, not missing.
    assert stats["update_ratio"]["fc"] == 0.0 and stats["step_size"]["fc"] == 0.0


def test_zero_denominators_leave_the_layer_out():
    w = torch.nn.Parameter(torch.zeros(3))
    w.grad = torch.zeros(3)
    stats = layer_stats(take_snapshot(0, [w], ["bias"], [0], [0.1]), [{}])
    assert stats["grad_norm"] == {"bias": 0.0}
    assert stats["update_ratio"] == {} and stats["step_size"] == {}


def test_snapshot_without_weights_skips_the_update_statistics():
    w = torch.nn.Parameter(torch.ones(2))
    w.grad = torch.ones(2)
    snap = take_snapshot(0, [w], ["fc"], [0], [0.1], copy_weights=False)
    assert snap.weights is None
    stats = layer_stats(snap, [{}])
    assert set(stats) == {"grad_norm"}


def test_layer_histograms_cover_every_element_of_a_layer():
    a, b = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(3))
    a.grad, b.grad = torch.full((2, 2), 2.0), torch.full((3,), 3.0)
    snap = take_snapshot(0, [a, b], ["conv"], [0, 0], [0.1, 0.1])
    with torch.no_grad():
        a.sub_(0.5)
    stats = layer_stats(snap, [{"sqr_avg": torch.full((2, 2), 4.0)}, {}])  # norms first, as the
    hists = layer_histograms(snap, [{"sqr_avg": torch.full((2, 2), 4.0)}, {}])  # monitor does
    grad = hists["grad"]["conv"]
    assert (grad.num, grad.min, grad.max, grad.sum, grad.sum_squares) == (7, 2.0, 3.0, 17.0, 43.0)
    assert grad.counts[0] == 4 and grad.counts[-1] == 3 and sum(grad.counts) == 7
    update = hists["update"]["conv"]  # w_after - w_before: the sign survives the in-place norms
    assert (update.min, update.max, update.sum) == (-0.5, 0.0, -2.0)
    assert stats["update_ratio"]["conv"] == pytest.approx(1.0 / math.sqrt(7))
    sqrt = hists["sqr_avg_sqrt"]["conv"]
    assert (sqrt.num, sqrt.min, sqrt.max, sqrt.counts) == (4, 2.0, 2.0, [4.0])
    assert "grad_avg" not in hists


def test_one_host_transfer_for_the_statistics_and_two_for_the_histograms(monkeypatch):
    """On a GPU each transfer is a synchronisation: count them (`tolist`, `item`, `float`)."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(5, 3, generator=gen).requires_grad_() for _ in range(4)]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    snap = take_snapshot(0, params, ["a", "b"], [0, 0, 1, 1], [0.1] * 4)
    with torch.no_grad():
        for p in params:
            p.sub_(0.1 * p.grad)
    states = [
        {"grad_avg": p.grad.clone(), "sqr_avg": p.grad**2, "trust_ratio": torch.tensor(0.5)}
        for p in params
    ]
    calls = []
    for name in ("tolist", "item", "__float__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(
            torch.Tensor, name, lambda self, *a, _r=real, _n=name: calls.append(_n) or _r(self, *a)
        )
    stats = layer_stats(snap, states)
    assert calls == ["tolist"] and len(stats) == 6
    calls.clear()
    hists = layer_histograms(snap, states)
    assert calls == ["tolist", "tolist"] and len(hists) == 5
