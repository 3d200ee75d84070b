"""OptimizerStatsMonitor in a real Trainer, checked by reading its event files back with
TensorBoard's own EventAccumulator."""

import math
import warnings
from functools import partial

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lightning_accel.lightning.bridge import CallbackBridge
from lightning_accel.loop.callback import Callback
from lightning_accel.loop.events import CancelStepException
from lightning_accel.module import AccelModule
from lightning_accel.monitor import OptimizerStatsMonitor
from lightning_accel.monitor.layers import matching
from lightning_accel.optim.recipes import Adam, Lamb
from lightning_accel.schedule.fit import fit_one_cycle

from .helpers import (
    TinyRegression,
    experiment_metrics,
    read_events,
    scalars,
    session_hparams,
    tiny_loader,
    trainer_kwargs,
)

EPOCHS, STEPS_PER_EPOCH = 2, 8
TOTAL = EPOCHS * STEPS_PER_EPOCH


class Spy(pl.Callback):
    """Records independently what each step saw: gradients and weights, in float64."""

    def __init__(self):
        self.before, self.after, self.trust = {}, {}, {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        step = trainer.global_step
        self.before[step] = {
            n: (p.detach().double().clone(), p.grad.detach().double().clone())
            for n, p in pl_module.named_parameters()
        }
        self._opt = optimizer

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step - 1
        named = dict(pl_module.named_parameters())
        self.after[step] = {n: p.detach().double().clone() for n, p in named.items()}
        self.trust[step] = {
            n: float(self._opt.state[p]["trust_ratio"])
            for n, p in named.items()
            if "trust_ratio" in self._opt.state[p]
        }


def _norm(tensors):
    return math.sqrt(sum(float((t**2).sum()) for t in tensors))


def _adam_one_cycle(module):
    groups = [{"params": module.body.parameters()}, {"params": module.head.parameters()}]
    opt = Adam(groups, lr=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[0.01, 0.05], total_steps=TOTAL)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@pytest.fixture(scope="module")
def one_cycle_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("one_cycle")
    spy = Spy()
    monitor = OptimizerStatsMonitor(
        log_every_n_steps=3, histogram_every_n_steps=6, hparams={"recipe": "adam"}
    )
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, max_epochs=EPOCHS),
        logger=TensorBoardLogger(tmp_path, name="run"),
        callbacks=[spy, monitor],
    )
    module = TinyRegression(_adam_one_cycle)
    trainer.fit(module, tiny_loader())
    return trainer, spy, read_events(trainer.logger.log_dir)


LOGGED = [s for s in range(TOTAL) if (s + 1) % 3 == 0]  # Lightning's rhythm: the 3rd, 6th, ...


def _torch_one_cycle():
    """(lr, momentum) of each group at each step: the schedule replayed by torch alone, on
    torch's own SGD."""
    dummy = torch.optim.SGD(
        [{"params": [torch.zeros(1)]}, {"params": [torch.zeros(1)]}], lr=0.1, momentum=0.9
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(dummy, max_lr=[0.01, 0.05], total_steps=TOTAL)
    expected = []
    for _ in range(TOTAL):
        expected.append([(g["lr"], g["momentum"]) for g in dummy.param_groups])
        dummy.step()
        sched.step()
    return expected


def test_logged_hyper_parameters_follow_torch_one_cycle_schedule(one_cycle_run):
    _, _, acc = one_cycle_run
    expected = _torch_one_cycle()
    # Hyper-parameters are cheap scalars: every step, whatever the statistics' interval.
    for group in (0, 1):
        lrs = scalars(acc, f"hypers/lr/group{group}")
        moms = scalars(acc, f"hypers/mom/group{group}")
        assert sorted(lrs) == sorted(moms) == list(range(TOTAL))
        for step in range(TOTAL):
            assert lrs[step] == pytest.approx(expected[step][group][0], rel=1e-6)
            assert moms[step] == pytest.approx(expected[step][group][1], rel=1e-6)
    # Every hyper-parameter AccelOptimizer declares is a curve, under its own name.
    for name in ("sqr_mom", "eps", "wd"):
        assert sorted(scalars(acc, f"hypers/{name}/group0")) == list(range(TOTAL))
    assert "hypers/betas.0/group0" not in acc.Tags()["scalars"]


def test_per_layer_statistics_match_an_independent_record(one_cycle_run):
    trainer, spy, acc = one_cycle_run
    for layer in ("body", "head"):
        grad_norm = scalars(acc, f"grad_norm/{layer}")
        update_ratio = scalars(acc, f"update_ratio/{layer}")
        step_size = scalars(acc, f"step_size/{layer}")
        assert sorted(grad_norm) == sorted(update_ratio) == sorted(step_size) == LOGGED
        for step in LOGGED:
            names = [f"{layer}.weight", f"{layer}.bias"]
            weights = [spy.before[step][n][0] for n in names]
            grads = [spy.before[step][n][1] for n in names]
            deltas = [spy.after[step][n] - spy.before[step][n][0] for n in names]
            assert grad_norm[step] == pytest.approx(_norm(grads), rel=1e-5)
            assert update_ratio[step] == pytest.approx(_norm(deltas) / _norm(weights), rel=1e-4)
            assert step_size[step] == pytest.approx(_norm(deltas) / _norm(grads), rel=1e-4)
    # Adam keeps both running averages, so both statistics exist for every layer.
    for tag in ("grad_avg_norm/body", "sqr_avg_sqrt_mean/head"):
        assert sorted(scalars(acc, tag)) == LOGGED
    # The momentum buffer, replayed in float64 from the recorded gradients and torch's schedule:
    # Adam's damped average, grad_avg = mom * grad_avg + (1 - mom) * grad, from zero.
    moms = [group[0][1] for group in _torch_one_cycle()]
    for layer in ("body", "head"):
        names = [f"{layer}.weight", f"{layer}.bias"]
        avg = {n: torch.zeros_like(spy.before[0][n][1]) for n in names}
        logged = scalars(acc, f"grad_avg_norm/{layer}")
        for step in range(TOTAL):
            for n in names:
                avg[n] = moms[step] * avg[n] + (1 - moms[step]) * spy.before[step][n][1]
            if step in LOGGED:
                assert logged[step] == pytest.approx(_norm(avg.values()), rel=1e-5)
        assert sorted(logged) == LOGGED


def test_histograms_are_written_at_the_lower_rate(one_cycle_run):
    _, spy, acc = one_cycle_run
    tags = acc.Tags()["histograms"]
    for kind in ("weight", "grad", "update", "grad_avg", "sqr_avg_sqrt"):
        assert {f"{kind}/body", f"{kind}/head"} <= set(tags)
    events = acc.Histograms("grad/head")
    assert [e.step for e in events] == [5, 11]
    for event in events:
        grads = torch.cat(
            [spy.before[event.step][n][1].flatten() for n in ("head.weight", "head.bias")]
        )
        hist = event.histogram_value
        assert hist.num == grads.numel() == 9
        assert hist.sum == pytest.approx(float(grads.sum()), rel=1e-4, abs=1e-6)
        assert hist.min == pytest.approx(float(grads.min()), rel=1e-5)
        assert hist.max == pytest.approx(float(grads.max()), rel=1e-5)


def test_run_settings_and_final_metrics_reach_the_hparams_tab(one_cycle_run):
    trainer, _, acc = one_cycle_run
    hparams = session_hparams(acc)
    opt = trainer.optimizers[0]
    names = [cb.func.__name__ if isinstance(cb, partial) else cb.__name__ for cb in opt.cbs]
    assert hparams["optimizer"] == "+".join(names)
    assert hparams["recipe"] == "adam"
    assert hparams["max_epochs"] == EPOCHS
    assert hparams["optimizer.sqr_mom"] == pytest.approx(0.99)
    assert experiment_metrics(acc) == ["final/train_loss"]
    final = scalars(acc, "final/train_loss")
    assert list(final) == [TOTAL]
    assert final[TOTAL] == pytest.approx(float(trainer.callback_metrics["train_loss"]))
    # Lightning's placeholder session would hide ours: the monitor turns it off.
    assert "hp_metric" not in acc.Tags()["scalars"]


def test_layer_filter_and_trust_ratio(tmp_path):
    spy = Spy()
    monitor = OptimizerStatsMonitor(
        layers=matching("head"),
        stats=("grad_norm", "trust_ratio"),
        histograms=0,
        log_hparams=False,
    )
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, log_every_n_steps=4),
        logger=TensorBoardLogger(tmp_path, name="lamb"),
        callbacks=[spy, monitor],
    )
    trainer.fit(TinyRegression(lambda m: Lamb(m.parameters(), lr=1e-2)), tiny_loader())
    acc = read_events(trainer.logger.log_dir)
    tags = set(acc.Tags()["scalars"])
    assert {
        t for t in tags if not t.startswith(("hypers/", "train_loss", "epoch", "hp_metric"))
    } == {
        "grad_norm/head",
        "trust_ratio/head",
    }
    assert acc.Tags()["histograms"] == []
    trust = scalars(acc, "trust_ratio/head")
    assert sorted(trust) == list(range(8))  # 8 steps: fewer than the 50 points, so every one
    for step, value in trust.items():
        # LAMB's trust ratio per tensor, averaged over the layer's weight and bias.
        expected = (spy.trust[step]["head.weight"] + spy.trust[step]["head.bias"]) / 2
        assert value == pytest.approx(expected, rel=1e-5)


def test_inside_a_callback_bridge_it_logs_the_same_numbers(tmp_path):
    def run(name, callbacks):
        torch.manual_seed(0)
        trainer = pl.Trainer(
            **trainer_kwargs(tmp_path, log_every_n_steps=2),
            logger=TensorBoardLogger(tmp_path, name=name),
            callbacks=callbacks,
        )
        trainer.fit(TinyRegression(lambda m: Adam(m.parameters(), lr=1e-2)), tiny_loader())
        return read_events(trainer.logger.log_dir)

    direct = run("direct", [OptimizerStatsMonitor(log_hparams=False)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "on_after_backward is not an event"
        bridge = CallbackBridge(OptimizerStatsMonitor(log_hparams=False))
    bridged = run("bridged", [bridge])
    for tag in ("hypers/lr/group0", "grad_norm/body", "update_ratio/head", "grad_avg_norm/body"):
        assert scalars(bridged, tag) == pytest.approx(scalars(direct, tag), rel=1e-6), tag
        assert sorted(scalars(bridged, tag)) == list(range(8))


@pytest.mark.parametrize(
    "logger, found",
    [(False, "no logger"), ("csv", "CSVLogger")],
)
def test_without_tensorboard_it_warns_and_writes_nothing(tmp_path, logger, found):
    if logger == "csv":
        logger = CSVLogger(tmp_path)
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, log_every_n_steps=1),
        logger=logger,
        callbacks=[OptimizerStatsMonitor()],
    )
    with pytest.warns(UserWarning, match=f"TensorBoard only and found .*{found}"):
        trainer.fit(TinyRegression(), tiny_loader())
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_log_only_steps_take_a_snapshot(tmp_path, monkeypatch):
    """Steps it does not log do no work: no weight copies, no norms."""
    import lightning_accel.monitor.stats_monitor as callback_module

    taken = []
    real = callback_module.take_snapshot
    monkeypatch.setattr(
        callback_module,
        "take_snapshot",
        lambda step, *a, **k: taken.append(step) or real(step, *a, **k),
    )
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path),
        logger=TensorBoardLogger(tmp_path),
        callbacks=[
            OptimizerStatsMonitor(log_every_n_steps=5, histogram_every_n_steps=0, log_hparams=False)
        ],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(TinyRegression(), tiny_loader())
    assert taken == [4]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"log_every_n_steps": 0}, "log_every_n_steps must be None or an int >= 1"),
        ({"log_every_n_steps": 2.5}, "log_every_n_steps must be None or an int >= 1"),
        ({"histogram_every_n_steps": -1}, "histogram_every_n_steps must be None or an int >= 0"),
        ({"points": 0}, r"points must be an int >= 1, got 0"),
        ({"points": None}, r"points must be an int >= 1, got None"),
        ({"points": 12.5}, r"points must be an int >= 1, got 12.5"),
        ({"histograms": -1}, r"histograms must be an int >= 0 \(0 turns them off\), got -1"),
        ({"histograms": True}, r"histograms must be an int >= 0"),
        ({"hypers_every_n_steps": 0}, r"hypers_every_n_steps must be an int >= 1, got 0"),
        ({"histogram_kinds": ("grad", "grads")}, "histogram_kinds must be a sequence of names"),
        ({"histogram_kinds": "grad"}, "histogram_kinds must be a sequence of names"),
        ({"histogram_sample": 0}, r"histogram_sample must be None \(every element\) or an int >="),
        ({"histogram_sample": 1.5}, r"histogram_sample must be None \(every element\) or an int"),
        ({"stats": ("grad_norm", "grad_nrom")}, "stats must be a sequence of names from"),
        ({"stats": "grad_norm"}, "stats must be a sequence of names from"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OptimizerStatsMonitor(**kwargs)


def test_arguments_are_keyword_only():
    # The first positional argument was once log_every_n_steps: refuse it rather than read it
    # as a number of points.
    with pytest.raises(TypeError):
        OptimizerStatsMonitor(10)


def test_layers_must_be_callable():
    with pytest.raises(TypeError, match="layers must be a callable"):
        OptimizerStatsMonitor(layers="body")


def _cos(start, end, pct):
    return start + (1 + math.cos(math.pi * (1 - pct))) * (end - start) / 2


def _one_cycle(lr_max, pos, pct_start=0.25, div=25.0, div_final=1e5, moms=(0.95, 0.85, 0.95)):
    """The chapter's 1cycle policy at training position `pos` in [0, 1), in float64."""
    if pos < pct_start:
        pct = pos / pct_start
        return _cos(lr_max / div, lr_max, pct), _cos(moms[0], moms[1], pct)
    pct = (pos - pct_start) / (1 - pct_start)
    return _cos(lr_max, lr_max / div_final, pct), _cos(moms[1], moms[2], pct)


def test_fit_one_cycle_on_an_accel_module_logs_the_1cycle_curves(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    module = AccelModule(model, torch.nn.MSELoss(), opt_func=Adam, lr=1e-2)
    monitor = OptimizerStatsMonitor(log_every_n_steps=1, histogram_every_n_steps=0)
    kwargs = trainer_kwargs(tmp_path)
    del kwargs["max_epochs"]
    trainer = fit_one_cycle(
        module,
        EPOCHS,
        0.01,
        cbs=[monitor],  # through the module's own CallbackBridge
        train_dataloaders=tiny_loader(),
        logger=TensorBoardLogger(tmp_path, name="fit_one_cycle"),
        **kwargs,
    )
    acc = read_events(trainer.logger.log_dir)
    lrs, moms = scalars(acc, "hypers/lr/group0"), scalars(acc, "hypers/mom/group0")
    assert sorted(lrs) == sorted(moms) == list(range(TOTAL))
    for step in range(TOTAL):
        lr, mom = _one_cycle(0.01, step / TOTAL)
        assert lrs[step] == pytest.approx(lr, rel=1e-5)
        assert moms[step] == pytest.approx(mom, rel=1e-6)
    assert {"grad_norm/model.0", "grad_norm/model.2"} <= set(acc.Tags()["scalars"])


class CancelSecondStep(Callback):
    """Cancels the optimizer step of the second batch, after the monitor has seen before_step."""

    run_after = OptimizerStatsMonitor

    def before_step(self):
        if self.train_iter == 1:
            raise CancelStepException


def test_a_cancelled_step_in_a_bridge_is_reported_as_no_update(tmp_path):
    spy = Spy()
    bridge = CallbackBridge(OptimizerStatsMonitor(log_hparams=False), CancelSecondStep())
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, log_every_n_steps=1, max_steps=4),
        logger=TensorBoardLogger(tmp_path, name="cancel"),
        callbacks=[spy, bridge],
    )
    trainer.fit(TinyRegression(lambda m: Adam(m.parameters(), lr=1e-2)), tiny_loader())
    acc = read_events(trainer.logger.log_dir)
    ratios = scalars(acc, "update_ratio/body")
    # Step 1 was cancelled (after_step still fires, as in the reference loop): nothing moved, and
    # its snapshot does not leak into step 2.
    assert sorted(ratios) == [0, 1, 2, 3]
    assert ratios[1] == 0.0
    for step in (2, 3):
        names = ["body.weight", "body.bias"]
        deltas = [spy.after[step][n] - spy.before[step][n][0] for n in names]
        weights = [spy.before[step][n][0] for n in names]
        assert ratios[step] == pytest.approx(_norm(deltas) / _norm(weights), rel=1e-4)


class TwoOptimizers(TinyRegression):
    """Manual optimization with one optimizer per layer, as in GAN training."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        x, y = batch
        for opt in self.optimizers():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(self(x), y)
            self.manual_backward(loss)
            opt.step()

    def configure_optimizers(self):
        return [
            torch.optim.SGD(self.body.parameters(), lr=0.1, momentum=0.9),
            Adam(self.head.parameters(), lr=0.01),
        ]


def test_several_optimizers_are_told_apart(tmp_path):
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, log_every_n_steps=1, max_steps=4),
        logger=TensorBoardLogger(tmp_path, name="two"),
        callbacks=[OptimizerStatsMonitor(histogram_every_n_steps=0)],
    )
    trainer.fit(TwoOptimizers(), tiny_loader())
    acc = read_events(trainer.logger.log_dir)
    tags = set(acc.Tags()["scalars"])
    assert {"hypers/lr/opt0.group0", "hypers/momentum/opt0.group0", "hypers/lr/opt1.group0"} <= tags
    assert "hypers/mom/opt1.group0" in tags and "hypers/mom/opt0.group0" not in tags
    # Each optimizer reports the layers it steps, from its own state.
    assert {"grad_avg_norm/body", "grad_avg_norm/head", "sqr_avg_sqrt_mean/head"} <= tags
    assert "sqr_avg_sqrt_mean/body" not in tags
    assert all(v == pytest.approx(0.1) for v in scalars(acc, "hypers/lr/opt0.group0").values())
    hparams = session_hparams(acc)
    assert hparams["optimizer0"] == "SGD"
    assert hparams["optimizer1"].endswith("adam_step")


@pytest.mark.parametrize(
    "kwargs, metrics",
    [({"hparam_metrics": ("train_loss",)}, ["final/train_loss"]), ({"hparam_metrics": ()}, [])],
)
def test_hparam_metrics_choose_the_final_metrics(tmp_path, kwargs, metrics):
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, log_every_n_steps=4),
        logger=TensorBoardLogger(tmp_path, name="hp"),
        callbacks=[OptimizerStatsMonitor(hparams={"seed": 0, "note": None}, **kwargs)],
    )
    trainer.fit(TinyRegression(), tiny_loader())
    acc = read_events(trainer.logger.log_dir)
    assert set(acc.PluginTagToContent("hparams")) == {
        "_hparams_/experiment",
        "_hparams_/session_start_info",
        "_hparams_/session_end_info",
    }
    assert experiment_metrics(acc) == metrics
    hparams = session_hparams(acc)
    assert hparams["seed"] == 0 and hparams["note"] == "None"
    assert hparams["optimizer"] == "Adam" and hparams["optimizer.betas.1"] == pytest.approx(0.999)


def test_without_log_hparams_no_session_is_written(tmp_path):
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, log_every_n_steps=4),
        logger=TensorBoardLogger(tmp_path, name="nohp", default_hp_metric=False),
        callbacks=[OptimizerStatsMonitor(log_hparams=False)],
    )
    trainer.fit(TinyRegression(), tiny_loader())
    acc = read_events(trainer.logger.log_dir)
    with pytest.raises(KeyError):  # no summary of TensorBoard's hparams plugin at all
        acc.PluginTagToContent("hparams")
    assert "final/train_loss" not in acc.Tags()["scalars"]
