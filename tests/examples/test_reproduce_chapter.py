"""examples/reproduce_chapter.py: every cell of the chapter runs, with tiny settings."""

import contextlib
import io
import math
import shlex

import lightning.pytorch as pl
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


N_VALID = TINY["limit_batches"] * TINY["batch_size"]  # validation images per epoch


@pytest.fixture(scope="module")
def run():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        results = example.main(**TINY)
    return results, out.getvalue()


@pytest.fixture(scope="module")
def results(run):
    return run[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "cell", ["baseline", "plain_sgd", "generic_sgd", "momentum", "rms_prop", "adam"]
)
def test_training_cells_print_the_chapters_table(results, cell):
    rows = results[cell]
    assert len(rows) == TINY["epochs"]
    for train_loss, valid_loss, accuracy in rows:
        assert math.isfinite(train_loss) and math.isfinite(valid_loss)
        # The fraction of 16 validation images classified right: a whole number of them.
        assert accuracy * N_VALID == pytest.approx(round(accuracy * N_VALID), abs=1e-5)
        assert 0 <= round(accuracy * N_VALID) <= N_VALID


@pytest.mark.slow
def test_lr_find_suggests_a_learning_rate_of_its_sweep_and_prints_it(run):
    results, out = run
    (valley,) = results["sgd_lr_find"]
    # valley is one of the sweep's learning rates, 1e-7 * 1e8^(k/12), inside the window the
    # suggestions look at: k from 12 // 10 = 1 up to 5 before the end of at most 12 points.
    sweep = [1e-7 * 1e8 ** (k / 12) for k in range(1, 12 - 5)]
    assert any(valley == pytest.approx(lr, rel=1e-9) for lr in sweep), valley
    assert f"  lr_find, 12 steps from lr 1e-07 to 10: valley={valley:.3g}\n" in out


class StepCounter(pl.Callback):
    def __init__(self):
        self.steps = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps += 1


@pytest.mark.parametrize(("settings", "steps"), [({}, 3), ({"lr_find_iters": 9}, 9)])
def test_limit_batches_limits_lr_find_unless_its_steps_are_given(settings, steps, capsys):
    tiny = {k: v for k, v in TINY.items() if k not in ("lr_find_iters", "epochs")}
    ch = example.Chapter(**{**tiny, "limit_batches": 3, **settings})
    counter = StepCounter()
    ch.trainer_kwargs["callbacks"] = [counter]
    if steps < 7:  # too few points once the first steps // 10 and the last 5 are left out
        with pytest.warns(UserWarning, match="too few for suggestions"):
            result = example.sgd_lr_find(ch)
        assert math.isnan(result.valley)
    else:
        result = example.sgd_lr_find(ch)
        assert math.isfinite(result.valley)
    assert counter.steps == steps
    assert f"  lr_find, {steps} steps from lr 1e-07 to 10: valley=" in capsys.readouterr().out


def _docstring_commands():
    lines = [line.strip() for line in example.__doc__.splitlines()]
    commands = [line for line in lines if line.startswith("python examples/reproduce_chapter.py")]
    return [shlex.split(line.split("#")[0])[2:] for line in commands]


def test_every_command_in_the_docstring_parses():
    commands = _docstring_commands()
    assert len(commands) == 3
    for argv in commands:
        args = example.parse_args(argv)
        assert args.cells is None or set(args.cells) <= set(example.CELLS)


@pytest.mark.slow
def test_docstring_commands_naming_cells_run(capsys):
    ran = 0
    for argv in _docstring_commands():
        args = example.parse_args(argv)
        if args.cells is None:
            continue  # every cell: the module's tiny run above
        results = example.main(args.cells, **{**TINY, "epochs": args.epochs})
        assert list(results) == args.cells
        assert all(len(results[c]) == args.epochs for c in args.cells)
        ran += 1
    assert ran == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cells", "sgd_cb"], "--cells: invalid choice: 'sgd_cb'"),
        (["--limit-batches", "0"], "--limit-batches: must be a positive integer, got 0"),
        (["--lr-find-iters", "-1"], "--lr-find-iters: must be a positive integer, got -1"),
    ],
)
def test_bad_command_lines_are_named(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        example.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


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
