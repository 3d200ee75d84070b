"""examples/reproduce_chapter.py: every cell of the chapter runs, with tiny settings."""

import math

import pytest

from .helpers import load_example

example = load_example("reproduce_chapter")

TINY = dict(
    arch="resnet18",
    epochs=2,
    size=16,
    batch_size=8,
    limit_batches=2,
    lr_find_iters=12,
    progress_bar=False,
)


@pytest.fixture(scope="module")
def results():
    return example.main(**TINY)


@pytest.mark.slow
@pytest.mark.parametrize(
    "cell", ["baseline", "plain_sgd", "generic_sgd", "momentum", "rms_prop", "adam"]
)
def test_training_cells_print_the_chapters_table(results, cell):
    rows = results[cell]
    assert len(rows) == TINY["epochs"]
    for train_loss, valid_loss, accuracy in rows:
        assert math.isfinite(train_loss) and math.isfinite(valid_loss)
        assert 0.0 <= accuracy <= 1.0


@pytest.mark.slow
def test_lr_find_suggests_a_learning_rate(results):
    suggestions = results["sgd_lr_find"]
    assert all(math.isfinite(v) and v > 0 for v in suggestions)


@pytest.mark.slow
def test_decoupled_weight_decay_differs_from_l2_under_adam(results):
    lr, wd, eps, w, g = 0.1, 0.5, 1e-5, 1.0, (1e-3, 1.0)
    # First Adam step: the debiased averages are g and g**2, so the step is lr * g / (|g| + eps).
    decoupled = [w * (1 - lr * wd) - lr * gi / (abs(gi) + eps) for gi in g]
    l2 = [w - lr * (gi + wd * w) / (abs(gi + wd * w) + eps) for gi in g]
    assert results["decoupled_weight_decay"]["decoupled"] == pytest.approx(decoupled, rel=1e-6)
    assert results["decoupled_weight_decay"]["l2"] == pytest.approx(l2, rel=1e-6)


@pytest.mark.slow
def test_terminate_on_nan_stops_the_fit(results):
    # The loss turns NaN on its third call: the first validation batch of epoch 0.
    assert results["callbacks"]["recorded_batches"] == 2
    assert results["callbacks"]["epochs_completed"] < TINY["epochs"]


def test_unknown_cells_and_data_are_named():
    with pytest.raises(ValueError, match="cells must be names from"):
        example.main(["baseline", "adamw"])
    with pytest.raises(ValueError, match="data must be one of \\['digits', 'imagenette'\\]"):
        example.main(["baseline"], data="mnist")
