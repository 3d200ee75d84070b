"""RAdam, QHAdam, LARC/LARS, LAMB, Lookahead and ranger against their published update rules.

Each rule is written out here in float64, one parameter tensor at a time, independently of the
package's callbacks; the optimizer runs on float64 weights too, so agreement is to ~1e-12.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_accel.optim import SGD, Lamb, Larc, Lookahead, QHAdam, RAdam, ranger

from .helpers import max_rel_diff

STEPS = 50
TOL = 1e-10
SHAPES = [(4, 5), (5,), (2, 3, 2)]
# Per-test settings, not a global profile: other areas keep their own hypothesis settings.
EXAMPLES = settings(max_examples=12, deadline=None)


def _data(seed: int):
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
    grads = [
        [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES] for _ in range(STEPS)
    ]
    return init, grads


def _ours(make_opt, init, grads):
    params = [p.clone().requires_grad_() for p in init]
    opt = make_opt(params)
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in params], opt


def _reference(update, init, grads, **hp):
    """Apply `update(w, g, t, slot, **hp) -> w` to each tensor; `slot` is its private state."""
    weights, slots = [w.clone() for w in init], [{} for _ in init]
    for t, gs in enumerate(grads, start=1):
        weights = [update(w, g, t, s, **hp) for w, g, s in zip(weights, gs, slots)]
    return weights, slots


def _moments(g, t, s, b1, b2):
    """Adam's first and second moments, bias-corrected (Kingma & Ba, Algorithm 1)."""
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
    return s["m"] / (1 - b1**t), s["v"] / (1 - b2**t)


def radam_rule(w, g, t, s, lr, b1, b2, eps, wd, beta):
    """Liu et al. 2019, Algorithm 2, with the variance rectified only when rho_t > 5."""
    w = w * (1 - lr * wd)
    m_hat, v_hat = _moments(g, t, s, b1, b2)
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
    s.setdefault("branches", set()).add(rho > 5)
    if rho <= 5:
        return w - lr * m_hat
    r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
    denom = v_hat.sqrt() + eps
    if beta:
        denom = torch.log1p(torch.exp(beta * denom)) / beta  # softplus
    return w - lr * r * m_hat / denom


def qhadam_rule(w, g, t, s, lr, b1, b2, nu1, nu2, eps, wd):
    """Ma & Yarats 2019, Algorithm 2 (QHAdam)."""
    w = w * (1 - lr * wd)
    m_hat, v_hat = _moments(g, t, s, b1, b2)
    num = (1 - nu1) * g + nu1 * m_hat
    return w - lr * num / (((1 - nu2) * g * g + nu2 * v_hat).sqrt() + eps)


def larc_rule(w, g, t, s, lr, mom, trust, eps, wd, clip):
    """Layer-wise rate lr * trust * |w| / (|g| + wd |w| + eps), capped at lr for LARC."""
    w = w * (1 - lr * wd)
    if mom:
        s["m"] = mom * s.get("m", 0) + g
    local = lr * trust * w.norm() / (g.norm() + wd * w.norm() + eps)
    s.setdefault("clipped", set()).add(bool(local > lr))
    if clip:
        local = min(local, torch.tensor(lr, dtype=torch.float64))
    return w - local * (s["m"] if mom else g)


def lamb_rule(w, g, t, s, lr, b1, b2, eps, wd):
    """You et al. 2019 (LAMB): the Adam update scaled by the trust ratio |w| / |update| <= 10."""
    w = w * (1 - lr * wd)
    m_hat, v_hat = _moments(g, t, s, b1, b2)
    update = m_hat / (v_hat.sqrt() + eps)
    wn, un = w.norm(), update.norm()
    s["q"] = 1.0 if wn == 0 or un == 0 else min(wn / un, 10.0)
    return w - lr * s["q"] * update


@EXAMPLES
@given(
    seed=st.integers(0, 2**16),
    lr=st.floats(1e-4, 0.05),
    b2=st.sampled_from([0.9, 0.99, 0.999]),
    eps=st.sampled_from([1e-8, 1e-5]),
    wd=st.sampled_from([0.0, 0.01]),
    beta=st.sampled_from([0.0, 5.0]),
)
def test_radam_matches_its_update_rule_in_both_branches(seed, lr, b2, eps, wd, beta):
    init, grads = _data(seed)
    ours, _ = _ours(
        lambda ps: RAdam(ps, lr=lr, sqr_mom=b2, eps=eps, wd=wd, beta=beta, impl="per_param"),
        init,
        grads,
    )
    ref, slots = _reference(
        radam_rule, init, grads, lr=lr, b1=0.9, b2=b2, eps=eps, wd=wd, beta=beta
    )
    assert slots[0]["branches"] == {False, True}  # both the SGD-like and rectified steps ran
    assert max_rel_diff(ours, ref) <= TOL


@EXAMPLES
@given(
    seed=st.integers(0, 2**16),
    lr=st.floats(1e-4, 0.05),
    nu=st.sampled_from([(0.7, 1.0), (0.8, 0.7), (1.0, 1.0), (0.0, 0.5)]),
    wd=st.sampled_from([0.0, 0.01]),
)
def test_qhadam_matches_its_update_rule(seed, lr, nu, wd):
    init, grads = _data(seed)
    nu1, nu2 = nu
    ours, _ = _ours(
        lambda ps: QHAdam(ps, lr=lr, nu_1=nu1, nu_2=nu2, wd=wd, impl="per_param"), init, grads
    )
    ref, _ = _reference(
        qhadam_rule, init, grads, lr=lr, b1=0.999, b2=0.999, nu1=nu1, nu2=nu2, eps=1e-8, wd=wd
    )
    assert max_rel_diff(ours, ref) <= TOL


@pytest.mark.parametrize("clip", [True, False], ids=["larc", "lars"])
@pytest.mark.parametrize("mom", [0.0, 0.9])
@given(
    seed=st.integers(0, 2**16),
    lr=st.floats(1e-3, 0.1),
    trust=st.sampled_from([0.02, 1.0, 5.0]),
    wd=st.sampled_from([0.0, 0.01]),
)
@settings(max_examples=6, deadline=None)
def test_larc_and_lars_match_the_layerwise_rule(clip, mom, seed, lr, trust, wd):
    init, grads = _data(seed)
    ours, opt = _ours(
        lambda ps: Larc(ps, lr=lr, mom=mom, clip=clip, trust_coeff=trust, wd=wd, impl="per_param"),
        init,
        grads,
    )
    ref, _ = _reference(
        larc_rule, init, grads, lr=lr, mom=mom, trust=trust, eps=1e-8, wd=wd, clip=clip
    )
    assert max_rel_diff(ours, ref) <= TOL
    assert all("local_lr" in opt.state[p] for p in opt.param_groups[0]["params"])


def test_larc_clips_where_lars_does_not():
    # A large trust coefficient makes the layer-wise rate exceed lr: the two variants must differ.
    init, grads = _data(1)
    _, slots = _reference(
        larc_rule, init, grads, lr=0.01, mom=0.9, trust=5.0, eps=1e-8, wd=0.0, clip=True
    )
    assert True in slots[0]["clipped"]
    larc, _ = _ours(lambda ps: Larc(ps, lr=0.01, trust_coeff=5.0, clip=True), init, grads)
    lars, _ = _ours(lambda ps: Larc(ps, lr=0.01, trust_coeff=5.0, clip=False), init, grads)
    assert max_rel_diff(larc, lars) > 1e-3


@EXAMPLES
@given(
    seed=st.integers(0, 2**16),
    lr=st.floats(1e-4, 0.05),
    eps=st.sampled_from([1e-6, 1e-5]),
    wd=st.sampled_from([0.0, 0.01]),
)
def test_lamb_matches_its_update_rule(seed, lr, eps, wd):
    init, grads = _data(seed)
    ours, opt = _ours(lambda ps: Lamb(ps, lr=lr, eps=eps, wd=wd, impl="per_param"), init, grads)
    ref, slots = _reference(lamb_rule, init, grads, lr=lr, b1=0.9, b2=0.99, eps=eps, wd=wd)
    assert max_rel_diff(ours, ref) <= TOL
    for p, slot in zip(opt.param_groups[0]["params"], slots):
        assert float(opt.state[p]["trust_ratio"]) == pytest.approx(float(slot["q"]), rel=1e-9)


def test_lamb_trust_ratio_is_one_for_zero_weights():
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = Lamb([p], lr=0.1)
    p.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    assert float(opt.state[p]["trust_ratio"]) == 1.0
    assert torch.all(p < 0)  # a full-rate step was taken, not a zero one


def _lookahead_rule(inner_rule, k, alpha, init, grads, **hp):
    """Zhang et al. 2019, Algorithm 1: every k steps slow += alpha (fast - slow), fast = slow."""
    fast, slow = [w.clone() for w in init], [w.clone() for w in init]
    slots = [{} for _ in init]
    for t, gs in enumerate(grads, start=1):
        fast = [inner_rule(w, g, t, s, **hp) for w, g, s in zip(fast, gs, slots)]
        if t % k == 0:
            slow = [sw + alpha * (fw - sw) for sw, fw in zip(slow, fast)]
            fast = [sw.clone() for sw in slow]
    return fast


def sgd_momentum_rule(w, g, t, s, lr, mom):
    s["m"] = mom * s.get("m", 0) + g
    return w - lr * s["m"]


@EXAMPLES
@given(
    seed=st.integers(0, 2**16),
    k=st.integers(1, 7),
    alpha=st.sampled_from([0.2, 0.5, 1.0]),
)
def test_lookahead_matches_its_update_rule(seed, k, alpha):
    init, grads = _data(seed)
    ours, opt = _ours(
        lambda ps: Lookahead(SGD(ps, lr=0.01, mom=0.9), k=k, alpha=alpha), init, grads
    )
    ref = _lookahead_rule(sgd_momentum_rule, k, alpha, init, grads, lr=0.01, mom=0.9)
    assert max_rel_diff(ours, ref) <= TOL
    assert opt.count == STEPS


def test_ranger_is_lookahead_around_radam():
    init, grads = _data(3)
    ours, opt = _ours(lambda ps: ranger(ps, lr=0.01), init, grads)
    ref = _lookahead_rule(
        radam_rule, 6, 0.5, init, grads, lr=0.01, b1=0.95, b2=0.99, eps=1e-6, wd=0.01, beta=0.0
    )
    assert isinstance(opt, Lookahead) and isinstance(opt, torch.optim.Optimizer)
    assert max_rel_diff(ours, ref) <= TOL
