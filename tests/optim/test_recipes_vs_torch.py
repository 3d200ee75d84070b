"""The recipes equal torch.optim's optimizers to float32 precision after 50 steps."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_accel.optim import SGD, Adam, RMSProp

from .helpers import gradient_sequence, initial_params, max_rel_diff, run

SHAPES = st.sampled_from([[(7,)], [(4, 5), (5,)], [(2, 3, 4), (3,), (1,)]])
STEPS = 50
TOL = 1e-6
# The reference loop and the composed path pin the callbacks' math against torch's for-loop
# optimizers; "auto", what users get by default, runs SGD and Adam through torch's fused kernels
# and is compared with torch's fused optimizers (the executor tests check every impl against each
# other, and against the reference loop).
IMPLS = pytest.mark.parametrize(
    "impl, torch_kw",
    [
        ("per_param", {"foreach": False}),
        ("composed", {"foreach": False}),
        ("auto", {"fused": True}),
    ],
)
# torch.optim.RMSprop has no fused kernel; "auto" runs it composed, like torch's for-loop.
RMSPROP_IMPLS = pytest.mark.parametrize("impl", ["per_param", "composed", "auto"])
# Per-test settings, not a global profile: other areas keep their own hypothesis settings.
EXAMPLES = settings(max_examples=8, deadline=None)


def _compare(ours, theirs, shapes, seed):
    init, grads = initial_params(shapes, seed), gradient_sequence(shapes, STEPS, seed)
    assert max_rel_diff(run(ours, init, grads), run(theirs, init, grads)) <= TOL


@IMPLS
@EXAMPLES
@given(
    shapes=SHAPES,
    seed=st.integers(0, 2**16),
    lr=st.floats(1e-4, 0.1),
    mom=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
    wd=st.sampled_from([0.0, 1e-4, 0.01]),
)
def test_sgd_equals_torch_sgd(shapes, seed, impl, torch_kw, lr, mom, wd):
    # torch's weight_decay is L2 on the gradient: our decouple_wd=False.
    _compare(
        lambda ps: SGD(ps, lr=lr, mom=mom, wd=wd, decouple_wd=False, impl=impl),
        lambda ps: torch.optim.SGD(ps, lr=lr, momentum=mom, weight_decay=wd, **torch_kw),
        shapes,
        seed,
    )


@IMPLS
@EXAMPLES
@given(
    shapes=SHAPES,
    seed=st.integers(0, 2**16),
    lr=st.floats(1e-4, 0.05),
    mom=st.sampled_from([0.8, 0.9, 0.95]),
    sqr_mom=st.sampled_from([0.9, 0.99, 0.999]),
    eps=st.sampled_from([1e-8, 1e-5, 1e-3]),
    wd=st.sampled_from([0.0, 0.01, 0.1]),
)
def test_adam_equals_torch_adamw(shapes, seed, impl, torch_kw, lr, mom, sqr_mom, eps, wd):
    _compare(
        lambda ps: Adam(ps, lr=lr, mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd, impl=impl),
        lambda ps: torch.optim.AdamW(
            ps, lr=lr, betas=(mom, sqr_mom), eps=eps, weight_decay=wd, **torch_kw
        ),
        shapes,
        seed,
    )


@IMPLS
@EXAMPLES
@given(
    shapes=SHAPES,
    seed=st.integers(0, 2**16),
    lr=st.floats(1e-4, 0.05),
    wd=st.sampled_from([1e-4, 0.01, 0.1]),
)
def test_adam_with_l2_equals_torch_adam(shapes, seed, impl, torch_kw, lr, wd):
    _compare(
        lambda ps: Adam(ps, lr=lr, wd=wd, decouple_wd=False, impl=impl),
        lambda ps: torch.optim.Adam(
            ps, lr=lr, betas=(0.9, 0.99), eps=1e-5, weight_decay=wd, **torch_kw
        ),
        shapes,
        seed,
    )


@RMSPROP_IMPLS
@EXAMPLES
@given(
    shapes=SHAPES,
    seed=st.integers(0, 2**16),
    lr=st.floats(1e-4, 0.01),
    sqr_mom=st.sampled_from([0.9, 0.99]),
    wd=st.sampled_from([0.0, 0.01]),
)
def test_rmsprop_equals_torch_rmsprop(shapes, seed, impl, lr, sqr_mom, wd):
    _compare(
        lambda ps: RMSProp(ps, lr=lr, sqr_mom=sqr_mom, wd=wd, decouple_wd=False, impl=impl),
        lambda ps: torch.optim.RMSprop(ps, lr=lr, alpha=sqr_mom, eps=1e-8, weight_decay=wd),
        shapes,
        seed,
    )


def test_adam_defaults_are_the_references():
    p = torch.zeros(2, requires_grad=True)
    (h,) = Adam([p], lr=1e-3).hypers
    assert {k: h[k] for k in ("mom", "sqr_mom", "eps", "wd")} == dict(
        mom=0.9, sqr_mom=0.99, eps=1e-5, wd=0.01
    )
