"""lr_find: the exponential sweep, stopping rules, exact restoration, suggestions, plot, errors."""

import io
import math
import re
import sys

import lightning.pytorch as pl
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_accel.optim import recipes
from lightning_accel.optim.lookahead import Lookahead
from lightning_accel.schedule.lr_finder import LRFinder, lr_find
from lightning_accel.schedule.suggestions import minimum, slide, steep, valley

from ..tiny import trainer
from ._tiny import StepProbe, TinyModule
from .test_suggestions import _valley_by_the_book

QUIET = dict(show_plot=False, enable_progress_bar=False)


class PersistentOptModule(TinyModule):
    """Keeps one AccelOptimizer across fits, so it carries state into lr_find."""

    def configure_optimizers(self):
        if not hasattr(self, "kept_opt"):
            self.kept_opt = recipes.Adam(self.parameters(), lr=1e-3)
        return self.kept_opt


def _snapshot(module):
    weights = {k: v.clone() for k, v in module.state_dict().items()}
    opt = module.kept_opt
    state = {
        id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
        for p, s in opt.state.items()
    }
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    return weights, state, groups


def _assert_same(module, snap):
    weights, state, groups = snap
    for k, v in module.state_dict().items():
        assert torch.equal(v, weights[k]), k
    opt = module.kept_opt
    assert {id(p) for p in opt.state} == set(state)
    for p, s in opt.state.items():
        assert s.keys() == state[id(p)].keys()
        for k, v in s.items():
            assert torch.equal(v, state[id(p)][k]) if torch.is_tensor(v) else v == state[id(p)][k]
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups


@pytest.fixture
def trained(tmp_path):
    module = PersistentOptModule(n_batches=4)
    trainer(tmp_path, max_steps=3).fit(module)  # the optimizer now has grad_avg, sqr_avg, step
    assert len(module.kept_opt.state) > 0
    return module


def test_sweeps_exponentially_and_restores_everything_exactly(trained, tmp_path):
    snap = _snapshot(trained)
    probe = StepProbe()
    lr_find(
        trained, num_it=12, stop_div=False, callbacks=[probe], default_root_dir=tmp_path, **QUIET
    )
    # The sweep really trained: 12 steps (the 4-batch loader cycled), lr = 1e-7 * (1e8)^(k/12).
    assert [lr for (lr,) in probe.lrs] == [
        pytest.approx(1e-7 * 1e8 ** (k / 12), rel=1e-12) for k in range(12)
    ]
    _assert_same(trained, snap)


def test_restores_a_lookahead_wrapper_and_its_slow_weights(tmp_path):
    class LookaheadModule(TinyModule):
        def configure_optimizers(self):
            if not hasattr(self, "kept_opt"):
                self.kept_opt = Lookahead(recipes.Adam(self.parameters(), lr=1e-3), k=2)
            return self.kept_opt

    module = LookaheadModule(n_batches=3)
    trainer(tmp_path, max_steps=3).fit(module)
    opt = module.kept_opt
    slow = [[w.clone() for w in group] for group in opt.slow_weights]
    count, weights = opt.count, {k: v.clone() for k, v in module.state_dict().items()}
    lr_find(module, num_it=7, stop_div=False, default_root_dir=tmp_path, **QUIET)
    assert opt.count == count
    assert all(torch.equal(a, b) for sa, sb in zip(slow, opt.slow_weights) for a, b in zip(sa, sb))
    assert all(torch.equal(v, weights[k]) for k, v in module.state_dict().items())


def test_restores_after_an_exception(trained, tmp_path):
    snap = _snapshot(trained)
    calls = []

    def failing_step(batch, batch_idx):
        calls.append(batch_idx)
        if len(calls) == 5:
            raise RuntimeError("boom at batch 5")
        return TinyModule.training_step(trained, batch, batch_idx)

    trained.training_step = failing_step
    with pytest.raises(RuntimeError, match="boom at batch 5"):
        lr_find(trained, num_it=20, default_root_dir=tmp_path, **QUIET)
    assert len(calls) == 5
    _assert_same(trained, snap)


def test_smoothed_loss_is_the_debiased_moving_average(tmp_path):
    finder = LRFinder(1e-5, 1e-2, num_it=15, stop_div=False)
    trainer(tmp_path, max_steps=15, callbacks=[finder]).fit(TinyModule(n_batches=15))
    assert len(finder.raw_losses) == 15
    avg, expected = 0.0, []
    for i, loss in enumerate(finder.raw_losses, start=1):
        avg = 0.98 * avg + 0.02 * loss
        expected.append(avg / (1 - 0.98**i))
    assert finder.losses == pytest.approx(expected, rel=1e-12)


def test_stops_when_the_loss_diverges(tmp_path):
    finder = LRFinder(1e-4, 100.0, num_it=60)
    trainer(tmp_path, max_steps=60, callbacks=[finder]).fit(TinyModule(n_batches=60))
    assert 5 < len(finder.losses) < 60
    assert finder.losses[-1] > 4 * min(finder.losses)
    assert all(x <= 4 * min(finder.losses) for x in finder.losses[:-1])


def test_stops_on_nan_even_without_stop_div(tmp_path):
    class NanAbove(TinyModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            return loss * math.nan if lr > 1e-3 else loss

    finder = LRFinder(1e-6, 1.0, num_it=30, stop_div=False)
    trainer(tmp_path, max_steps=30, callbacks=[finder]).fit(NanAbove(n_batches=30))
    # lr_k = 1e-6 * 1e6^(k/30) passes 1e-3 at k = 16: 15 finite losses, then the stop.
    assert len(finder.losses) == 16 and all(math.isfinite(x) for x in finder.losses)
    assert finder.lrs[-1] <= 1e-3


def test_returns_named_suggestions_and_saves_the_plot(tmp_path):
    module = TinyModule(n_batches=10)
    figures_before = plt.get_fignums()
    path = tmp_path / "lr_find.png"
    result = lr_find(
        module,
        num_it=40,
        suggest_funcs=(valley, slide, minimum, steep),
        plot_path=path,
        default_root_dir=tmp_path,
        **QUIET,
    )
    assert result._fields == ("valley", "slide", "minimum", "steep")
    assert all(1e-7 <= lr <= 10 for lr in result)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == figures_before  # show_plot=False: nothing left in pyplot
    assert (
        lr_find(module, num_it=10, suggest_funcs=None, default_root_dir=tmp_path, **QUIET) is None
    )


def test_too_short_a_curve_gives_nan_suggestions_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="too few for suggestions"):
        result = lr_find(TinyModule(), num_it=6, default_root_dir=tmp_path, **QUIET)
    assert math.isnan(result.valley)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"start_lr": 1.0, "end_lr": 1.0}, "start_lr must be smaller than end_lr"),
        ({"start_lr": 10.0, "end_lr": 1.0}, "start_lr must be smaller than end_lr"),
        ({"start_lr": 0.0}, "start_lr must be positive"),
        ({"num_it": 0}, "num_it must be a positive integer"),
        ({"max_steps": 5}, "lr_find sets max_steps itself"),
        ({"suggest_funcs": ("valley",)}, "suggest_funcs must be callables"),
        ({"plot_path": "/nonexistent-folder/lr.png"}, "plot_path .*folder does not exist"),
    ],
)
def test_bad_input_fails_before_training(kwargs, match, tmp_path):
    module = TinyModule()
    before = [p.detach().clone() for p in module.parameters()]
    with pytest.raises((ValueError, TypeError), match=match):
        lr_find(module, default_root_dir=tmp_path, **{**QUIET, **kwargs})
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_empty_training_loader_is_an_error(tmp_path):
    class Empty(TinyModule):
        def train_dataloader(self):
            return DataLoader(TensorDataset(torch.zeros(0, 3), torch.zeros(0, 1)), batch_size=4)

    with pytest.raises(ValueError, match="training loader is empty"):
        lr_find(Empty(), default_root_dir=tmp_path, **QUIET)


# -- gradients restored -------------------------------------------------------------------


def test_restores_every_gradient_weight_and_optimizer_state(trained, tmp_path):
    # Gradients the user holds going in: random on some parameters, None on one.
    params = list(trained.parameters())
    g = torch.Generator().manual_seed(1)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    params[-1].grad = None
    grads = [None if p.grad is None else p.grad.clone() for p in params]
    snap = _snapshot(trained)
    lr_find(trained, num_it=12, stop_div=False, default_root_dir=tmp_path, **QUIET)
    for p, before in zip(trained.parameters(), grads):
        if before is None:
            assert p.grad is None
        else:
            assert p.grad is not None and torch.equal(p.grad, before)
    _assert_same(trained, snap)


# -- suggestions, re-derived from the recorded curve ---------------------------------------


class LossProbe(pl.Callback):
    """The batch losses lr_find trained on, read from what each training step returned."""

    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def _smoothed(raw, beta=0.98):
    avg, out = 0.0, []
    for i, loss in enumerate(raw, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return np.array(out)


def _slide_by_the_book(lrs, losses, lr_diff=15, thresh=0.005):
    grads = np.gradient(losses)
    r, left = -1, -1 - min(lr_diff, len(losses) - 1)
    found = lrs[left]
    while left >= -len(losses) and abs(grads[r] - grads[left]) > thresh:
        found = lrs[left]
        r, left = r - 1, left - 1
    return float(found)


@pytest.mark.parametrize("num_it", [40, 60])
def test_each_suggestion_is_its_definition_applied_to_the_recorded_curve(num_it, tmp_path):
    probe = LossProbe()
    result = lr_find(
        TinyModule(n_batches=10),
        num_it=num_it,
        suggest_funcs=(valley, slide, minimum, steep),
        callbacks=[probe],
        default_root_dir=tmp_path,
        **QUIET,
    )
    n = len(probe.losses)
    assert 20 < n <= num_it
    # The curve, in float64 from the batch losses and the exponential schedule.
    lrs = 1e-7 * (10.0 / 1e-7) ** (np.arange(n) / num_it)
    losses = _smoothed(probe.losses)
    lrs, losses = lrs[num_it // 10 : -5], losses[num_it // 10 : -5]  # the reference's cut
    log_slopes = np.diff(losses) / np.diff(np.log(lrs))
    expected = {
        "valley": _valley_by_the_book(lrs, losses),
        "slide": _slide_by_the_book(lrs, losses),
        "minimum": lrs[np.argmin(losses)] / 10,
        "steep": lrs[np.argmin(log_slopes)],
    }
    assert result._asdict() == pytest.approx(expected, rel=1e-9)


def test_steep_takes_the_slope_against_log_lr():
    # Two drops: 0.1 between points 5 and 6, 0.2 between 30 and 31. Against log(lr) (equal
    # spacing) the second is steeper; against lr itself the first would be, by far.
    lrs = np.logspace(-7, 1, 40)
    losses = np.ones(40)
    losses[6:] -= 0.1
    losses[31:] -= 0.2
    assert steep(lrs, losses, 100)[0] == pytest.approx(lrs[30])


# -- plot markers --------------------------------------------------------------------------


def test_plot_markers_sit_on_the_curve_at_the_lr_their_label_names(tmp_path):
    funcs = (valley, slide, minimum, steep)
    figures = plt.get_fignums()
    result = lr_find(
        TinyModule(n_batches=10),
        num_it=40,
        suggest_funcs=funcs,
        show_plot=True,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    (new,) = set(plt.get_fignums()) - set(figures)
    fig = plt.figure(new)
    try:
        curve, *markers = fig.axes[0].get_lines()
        xs, ys = (np.asarray(a, dtype=np.float64) for a in curve.get_data())
        assert [m.get_label() for m in markers] == [
            f"{name}: {lr:.2e}" for name, lr in result._asdict().items()
        ]
        for marker, lr in zip(markers, result):
            (x,), (y,) = marker.get_data()
            assert x == pytest.approx(lr, rel=1e-12)  # the named lr, not the minimum's
            assert xs[0] <= x <= xs[-1]
            # On the drawn line: linear between the neighbouring points on the log axis.
            i = np.searchsorted(xs, x)
            i = min(max(i, 1), len(xs) - 1)
            t = (np.log(x) - np.log(xs[i - 1])) / (np.log(xs[i]) - np.log(xs[i - 1]))
            assert y == pytest.approx(ys[i - 1] + t * (ys[i] - ys[i - 1]), rel=1e-9)
    finally:
        plt.close(fig)


def test_minimum_marker_left_of_the_suggestion_range_uses_the_whole_curve():
    # The minimum lies 12 points in; a tenth of its lr is 10 points earlier (lrs step by
    # 10^0.1), at index 2, before the num_it // 10 = 5 points the suggestions leave out.
    finder = LRFinder(1e-7, 1e3, num_it=50)
    finder.lrs = list(1e-7 * 10 ** (np.arange(40) / 10))
    finder.losses = list((np.arange(40) - 12.0) ** 2 + 1)
    result, points = finder.suggest((minimum,))
    assert result.minimum == pytest.approx(finder.lrs[2])
    assert points == [(pytest.approx(finder.lrs[2]), pytest.approx(finder.losses[2]))]


# -- progress --------------------------------------------------------------------------------


def _lr_find_lines(text):
    return [line for line in text.splitlines() if line.startswith("lr_find")]


def test_progress_without_a_terminal_is_a_line_per_quarter(tmp_path, capsys):
    lr_find(
        TinyModule(n_batches=10),
        start_lr=1e-6,
        end_lr=1e-2,
        num_it=40,
        stop_div=False,
        show_plot=False,
        default_root_dir=tmp_path,
    )
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = _lr_find_lines(out)
    assert len(lines) == 4
    for line, step in zip(lines, (10, 20, 30, 40)):
        lr = 1e-6 * 1e4 ** ((step - 1) / 40)
        assert line.startswith(f"lr_find: {step}/40 steps, lr {lr:.2e}, smoothed loss ")


def test_progress_says_why_the_sweep_stopped_early(tmp_path, capsys):
    lr_find(
        TinyModule(n_batches=10),
        start_lr=1e-4,
        end_lr=100.0,
        num_it=60,
        show_plot=False,
        default_root_dir=tmp_path,
    )
    lines = _lr_find_lines(capsys.readouterr().out)
    assert len(lines) <= 5
    assert re.fullmatch(
        r"lr_find: stopped after \d+ of 60 steps: the smoothed loss \S+ exceeds 4x its "
        r"minimum \S+ \(lr \S+\)",
        lines[-1],
    )


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_is_one_bar_over_the_steps(tmp_path, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    lr_find(
        TinyModule(n_batches=10),
        start_lr=1e-6,
        end_lr=1e-2,
        num_it=40,
        stop_div=False,
        show_plot=False,
        default_root_dir=tmp_path,
    )
    out = terminal.getvalue()
    assert "\r" in out  # redrawn in place
    assert "lr_find" in out and "40/40" in out
    assert not re.search(r"lr_find: \d+/40 steps", out)  # no plain lines


def test_no_progress_when_disabled(tmp_path, capsys):
    lr_find(TinyModule(n_batches=10), num_it=20, default_root_dir=tmp_path, **QUIET)
    assert _lr_find_lines(capsys.readouterr().out) == []
