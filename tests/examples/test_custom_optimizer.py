"""examples/custom_optimizer.py: Lion from callbacks, checked against the published algorithm,
then trained under fit_one_cycle and read back from TensorBoard."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from .helpers import load_example

example = load_example("custom_optimizer")


@settings(max_examples=20, deadline=None)
@given(
    lr=st.floats(1e-4, 1e-1),
    mom=st.floats(0.0, 0.99),
    mom2=st.floats(0.0, 0.999),
    wd=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**16),
)
def test_lion_matches_the_published_update(lr, mom, mom2, wd, seed):
    gen = torch.Generator().manual_seed(seed)
    w0 = torch.randn(5, 3, dtype=torch.float64, generator=gen)
    grads = [torch.randn(5, 3, dtype=torch.float64, generator=gen) for _ in range(4)]
    p = torch.nn.Parameter(w0.clone())
    opt = example.Lion([p], lr=lr, mom=mom, mom2=mom2, wd=wd)
    w, m = w0.clone(), torch.zeros_like(w0)
    for g in grads:
        p.grad = g.clone()
        opt.step()
        # Chen et al. (2023), Algorithm 2, written out.
        c = mom * m + (1 - mom) * g
        w = w - lr * (torch.sign(c) + wd * w)
        m = mom2 * m + (1 - mom2) * g
        torch.testing.assert_close(p.detach(), w, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(opt.state[p]["grad_avg"], m, rtol=1e-12, atol=1e-12)


def test_lion_trains_under_one_cycle_and_tensorboard_shows_its_steps(tmp_path):
    trainer = example.main(
        "lion",
        epochs=2,
        limit_batches=5,
        log_every_n_steps=1,
        root_dir=tmp_path,
        progress_bar=False,
    )
    assert isinstance(trainer.optimizers[0], example.Lion)
    acc = EventAccumulator(trainer.logger.log_dir, size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    # The hyper-parameter Lion declares is logged like any other.
    mom2 = {e.step: e.value for e in acc.Scalars("hypers/mom2/group0")}
    assert sorted(mom2) == list(range(10))
    assert all(v == pytest.approx(0.99) for v in mom2.values())
    lrs = {e.step: e.value for e in acc.Scalars("hypers/lr/group0")}
    # A 10-step run has fewer steps than the monitor's 12 histograms: one at every step. At the
    # last, step 9, Lion moves every weight by exactly +-lr.
    events = acc.Histograms("update/model.1")
    assert [e.step for e in events] == list(range(10))
    event = events[-1]
    hist = event.histogram_value
    assert hist.max == pytest.approx(lrs[9], rel=1e-3)
    assert hist.min == pytest.approx(-lrs[9], rel=1e-3)
    # Weights fed by always-blank pixels get no gradient and stay put (sign(0) = 0); no weight
    # moves by more than lr, so the squares sum to at most num * lr**2.
    moved = hist.sum_squares / lrs[9] ** 2
    assert 0.5 * hist.num < moved <= hist.num * (1 + 1e-4)


@settings(max_examples=20, deadline=None)
@given(
    lr=st.floats(1e-4, 1e-1),
    mom=st.floats(0.0, 0.99),
    sqr_mom=st.floats(0.8, 0.99),
    wd=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**16),
)
def test_radam_matches_the_published_update(lr, mom, sqr_mom, wd, seed):
    gen = torch.Generator().manual_seed(seed)
    w0 = torch.randn(5, 3, dtype=torch.float64, generator=gen)
    grads = [torch.randn(5, 3, dtype=torch.float64, generator=gen) for _ in range(12)]
    p = torch.nn.Parameter(w0.clone())
    opt = example.RAdam([p], lr=lr, mom=mom, sqr_mom=sqr_mom, wd=wd)
    eps = 1e-5  # radam_step's default, added to the debiased root as the reference does
    w, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
    rho_inf = 2 / (1 - sqr_mom) - 1
    for t, g in enumerate(grads, start=1):
        p.grad = g.clone()
        opt.step()
        # Liu et al. (2020), Algorithm 2, with decoupled weight decay first.
        w = w * (1 - lr * wd)
        m = mom * m + (1 - mom) * g
        v = sqr_mom * v + (1 - sqr_mom) * g * g
        m_hat = m / (1 - mom**t)
        rho = rho_inf - 2 * t * sqr_mom**t / (1 - sqr_mom**t)
        if rho > 5:
            r = ((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)) ** 0.5
            w = w - lr * r * m_hat / ((v / (1 - sqr_mom**t)).sqrt() + eps)
        else:
            w = w - lr * m_hat
        torch.testing.assert_close(p.detach(), w, rtol=1e-10, atol=1e-12)


def test_radam_from_callbacks_trains(tmp_path):
    trainer = example.main(
        "radam",
        epochs=1,
        limit_batches=3,
        log_every_n_steps=1,
        root_dir=tmp_path,
        progress_bar=False,
    )
    losses = trainer.lightning_module.bridge.learn.recorder.losses
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="optimizer must be one of \\['lion', 'radam'\\]"):
        example.main("adamw")
