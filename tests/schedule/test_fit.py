"""fit, fit_one_cycle, fit_flat_cos, fit_sgdr: the chapter's one-liners in real Trainers."""

import math
from functools import partial

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_accel.lightning.bridge import CallbackBridge
from lightning_accel.module import AccelModule
from lightning_accel.optim import recipes
from lightning_accel.optim.callbacks import average_grad, momentum_step, sgd_step
from lightning_accel.optim.optimizer import AccelOptimizer
from lightning_accel.schedule.fit import fit, fit_flat_cos, fit_one_cycle, fit_sgdr
from lightning_accel.schedule.lr_finder import lr_find
from lightning_accel.schedule.param_scheduler import ParamScheduler

from ..tiny import cos, one_cycle
from ._tiny import StepProbe, TinyModule, loader

QUIET = dict(
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)


def accel_module(opt_func=recipes.Adam, **kwargs):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    return AccelModule(model, torch.nn.functional.mse_loss, opt_func=opt_func, **kwargs)


def _assert_steps(seen, expected):
    """Every parameter group held the expected value at each optimizer step."""
    assert len(seen) == len(expected)
    for groups, value in zip(seen, expected):
        assert groups == [pytest.approx(value, rel=1e-12, abs=1e-15)] * len(groups)


def _run(fit_fn, module, *args, n_batches=5, tmp_path, **kwargs):
    probe = StepProbe()
    callbacks = [probe, *kwargs.pop("callbacks", [])]
    settings = {**QUIET, "default_root_dir": tmp_path, **kwargs}
    trainer = fit_fn(
        module, *args, train_dataloaders=loader(n_batches), callbacks=callbacks, **settings
    )
    return trainer, probe


def test_fit_one_cycle_on_an_accel_module_matches_the_formula(tmp_path):
    module = accel_module(lr=1e-3)
    trainer, probe = _run(fit_one_cycle, module, 3, 0.003, tmp_path=tmp_path)
    assert trainer.current_epoch == 3 and len(probe.lrs) == 15
    for k, (lr, mom) in enumerate(zip(probe.lrs, probe.moms)):
        exp_lr, exp_mom = one_cycle(k / 15, 0.003)
        assert lr == [pytest.approx(exp_lr, rel=1e-12)]
        assert mom == [pytest.approx(exp_mom, rel=1e-12)]
    # The Recorder got what was set, and the scheduler left the bridge after the fit.
    recorder = module.bridge.learn.recorder
    assert recorder.hps["lr"] == [pytest.approx(lr, rel=1e-12) for (lr,) in probe.lrs]
    assert not any(isinstance(cb, ParamScheduler) for cb in module.bridge.cbs)


def test_module_moms_are_the_default(tmp_path):
    module = accel_module(moms=(0.9, 0.8, 0.7))
    _, probe = _run(fit_one_cycle, module, 1, 0.01, tmp_path=tmp_path)
    assert probe.moms[0] == [pytest.approx(0.9)]
    assert probe.moms[-1] == [pytest.approx(cos(0.8, 0.7, (4 / 5 - 0.25) / 0.75))]


def test_the_chapters_calls(tmp_path):
    # learn.fit_one_cycle(3, 0.03, moms=(0,0,0)) on the chapter's plain SGD (no momentum at all).
    plain_sgd = partial(AccelOptimizer, cbs=[sgd_step])
    _, probe = _run(
        fit_one_cycle, accel_module(plain_sgd), 3, 0.03, moms=(0, 0, 0), tmp_path=tmp_path
    )
    _assert_steps(probe.lrs, [one_cycle(k / 15, 0.03)[0] for k in range(15)])
    # learn.fit(3, 0.03): the same lr at every step.
    _, probe = _run(fit, accel_module(plain_sgd), 3, 0.03, tmp_path=tmp_path)
    _assert_steps(probe.lrs, [0.03] * 15)
    # "fit_one_cycle will even work with our custom Optimizer": lr and mom annealed.
    momentum_sgd = partial(AccelOptimizer, cbs=[average_grad, momentum_step], mom=0.9)
    _, probe = _run(fit_one_cycle, accel_module(momentum_sgd), 3, 0.03, tmp_path=tmp_path)
    _assert_steps(probe.moms, [one_cycle(k / 15, 0.03)[1] for k in range(15)])


def test_plain_lightning_module_gets_a_bridge(tmp_path):
    trainer, probe = _run(fit_one_cycle, TinyModule(), 2, 0.05, pct_start=0.5, tmp_path=tmp_path)
    assert any(isinstance(cb, CallbackBridge) for cb in trainer.callbacks)
    for k, (lr,) in enumerate(probe.lrs):
        assert lr == pytest.approx(one_cycle(k / 10, 0.05, pct_start=0.5)[0], rel=1e-12)


def test_fit_flat_cos_and_fit_sgdr(tmp_path):
    _, probe = _run(fit_flat_cos, accel_module(), 2, 0.01, tmp_path=tmp_path)
    for k, (lr,) in enumerate(probe.lrs):
        p = k / 10
        expected = 0.01 if p < 0.75 else cos(0.01, 0.01 / 1e5, (p - 0.75) / 0.25)
        assert lr == pytest.approx(expected, rel=1e-12)
    # Two cycles, 1 then 2 epochs: 3 epochs, restarts at step 5.
    trainer, probe = _run(fit_sgdr, accel_module(), 2, 1, 0.01, tmp_path=tmp_path)
    assert trainer.current_epoch == 3
    expected = [cos(0.01, 0, k / 5) for k in range(5)] + [cos(0.01, 0, k / 10) for k in range(10)]
    assert [lr for (lr,) in probe.lrs] == [pytest.approx(e, rel=1e-12, abs=1e-15) for e in expected]


def test_wd_and_discriminative_lrs(tmp_path):
    def two_groups(model):
        return [list(model[0].parameters()), list(model[2].parameters())]

    module = accel_module(splitter=two_groups)
    _, probe = _run(fit_one_cycle, module, 1, slice(1e-4, 1e-2), wd=0.1, tmp_path=tmp_path)
    for k, (body, head) in enumerate(probe.lrs):
        assert head == pytest.approx(one_cycle(k / 5, 1e-2)[0], rel=1e-12)
        assert head / body == pytest.approx(100.0, rel=1e-12)
    assert probe.wds == [[0.1, 0.1]] * 5


def test_resume_mid_one_cycle_continues_through_the_bridge(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_epochs=1, save_top_k=-1)
    module = accel_module(lr=0.02)
    _, full = _run(
        fit_one_cycle,
        module,
        4,
        n_batches=3,
        tmp_path=tmp_path,
        callbacks=[ckpt],
        enable_checkpointing=True,
    )
    mid = tmp_path / "ckpt" / "epoch=1-step=6.ckpt"
    resumed_module = accel_module(lr=0.02)
    _, resumed = _run(
        fit_one_cycle, resumed_module, 4, n_batches=3, tmp_path=tmp_path, ckpt_path=str(mid)
    )
    assert resumed.lrs == full.lrs[6:]
    assert resumed.moms == full.moms[6:]
    hps = resumed_module.bridge.learn.recorder.hps["lr"]
    assert hps == [pytest.approx(one_cycle(k / 12, 0.02)[0], rel=1e-12) for k in range(12)]


@pytest.mark.parametrize(
    ("fit_fn", "args", "kwargs", "match"),
    [
        (fit_one_cycle, (2, 0.01), {"pct_start": 1.0}, "pct_start"),
        (fit_one_cycle, (2, -0.01), {}, "lr_max must be a positive number"),
        (fit_one_cycle, (2, 0.01), {"div": 0}, "div must be a positive number"),
        (fit_one_cycle, (2, 0.01), {"div_final": 0}, "div_final must be a positive number"),
        (fit_one_cycle, (2, 0.01), {"moms": (0.9, 0.8)}, "moms must be 3 numbers"),
        (fit_one_cycle, (0, 0.01), {}, "n_epoch must be a positive integer"),
        (fit_one_cycle, (2, 0.01), {"max_epochs": 3}, "n_epoch, not max_epochs"),
        (fit, (2, 0.01), {"cbs": [StepProbe()]}, "cbs must be lightning_accel Callbacks"),
    ],
)
def test_bad_input_fails_before_training(fit_fn, args, kwargs, match, tmp_path):
    module = accel_module()
    before = [p.detach().clone() for p in module.parameters()]
    with pytest.raises((ValueError, TypeError), match=match):
        fit_fn(
            module, *args, train_dataloaders=loader(), default_root_dir=tmp_path, **QUIET, **kwargs
        )
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_a_schedule_for_a_missing_hyper_parameter_fails_before_training(tmp_path):
    module = accel_module(partial(AccelOptimizer, cbs=[sgd_step]))
    before = [p.detach().clone() for p in module.parameters()]
    with pytest.raises(ValueError, match="'wd'.*no such hyper-parameter"):
        _run(fit, module, 1, 0.01, wd=0.1, tmp_path=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_lr_find_on_an_accel_module_restores_weights_and_its_optimizer(tmp_path, capsys):
    module = accel_module()
    fit(module, 1, train_dataloaders=loader(), default_root_dir=tmp_path, **QUIET)
    capsys.readouterr()
    opt = module.opt
    weights = {k: v.clone() for k, v in module.state_dict().items()}
    state = {
        p: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for p, s in opt.state.items()
    }
    result = lr_find(
        module,
        num_it=30,
        train_dataloaders=loader(10),
        show_plot=False,
        default_root_dir=tmp_path,
        **{k: v for k, v in QUIET.items() if k != "num_sanity_val_steps"},
    )
    assert math.isfinite(result.valley)
    assert "train_loss" not in capsys.readouterr().out  # the Recorder's table stays quiet
    assert module.opt is opt
    assert all(torch.equal(v, weights[k]) for k, v in module.state_dict().items())
    for p, s in state.items():
        assert all(torch.equal(opt.state[p][k], v) for k, v in s.items())


def test_param_scheduler_schedules_any_hyper_parameter_per_group(tmp_path):
    from lightning_accel.schedule.functions import SchedLin, SchedNo

    def two_groups(model):
        return [list(model[0].parameters()), list(model[2].parameters())]

    sched = ParamScheduler(
        {
            "sqr_mom": SchedLin(0.9, 0.99),
            "eps": SchedNo([1e-6, 1e-4]),  # one value per parameter group
        }
    )
    module = accel_module(splitter=two_groups, cbs=[sched])
    seen = []

    class Probe(StepProbe):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            seen.append([(g["betas"][1], g["eps"]) for g in optimizer.param_groups])

    trainer = pl.Trainer(max_epochs=1, callbacks=[Probe()], default_root_dir=tmp_path, **QUIET)
    trainer.fit(module, train_dataloaders=loader(4))
    for k, groups in enumerate(seen):
        sqr_mom = 0.9 + k / 4 * (0.99 - 0.9)
        assert groups == [
            (pytest.approx(sqr_mom, rel=1e-12), 1e-6),
            (pytest.approx(sqr_mom, rel=1e-12), 1e-4),
        ]
    assert module.bridge.learn.recorder.hps["eps"] == [1e-4] * 4  # the last group, per batch


class TinyData(pl.LightningDataModule):
    def __init__(self, n_batches=5):
        super().__init__()
        self.n_batches = n_batches

    def train_dataloader(self):
        return loader(self.n_batches)

    def val_dataloader(self):
        return loader(2, seed=1)


def test_datamodule_path_for_fit_and_lr_find(tmp_path):
    module = accel_module()
    probe = StepProbe()
    trainer = fit_one_cycle(
        module,
        2,
        0.01,
        datamodule=TinyData(),
        callbacks=[probe],
        default_root_dir=tmp_path,
        **QUIET,
    )
    assert trainer.current_epoch == 2
    _assert_steps(probe.lrs, [one_cycle(k / 10, 0.01)[0] for k in range(10)])
    before = {k: v.clone() for k, v in module.state_dict().items()}
    result = lr_find(
        module, datamodule=TinyData(20), num_it=25, show_plot=False, default_root_dir=tmp_path
    )
    assert math.isfinite(result.valley)
    assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())
