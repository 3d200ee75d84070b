"""The schedules as plain Lightning callbacks, in real Trainers."""

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_accel.optim.callbacks import average_grad, momentum_step
from lightning_accel.optim.optimizer import AccelOptimizer
from lightning_accel.schedule.functions import SchedNo
from lightning_accel.schedule.lightning_callbacks import HyperScheduleCallback, OneCycleSchedule

from ..tiny import one_cycle, trainer
from ._tiny import StepProbe, TinyModule


def test_one_cycle_sets_every_step_from_the_published_formula(tmp_path):
    sched, probe = OneCycleSchedule(0.01), StepProbe()
    trainer(tmp_path, max_epochs=2, callbacks=[sched, probe]).fit(TinyModule())
    expected = [one_cycle(k / 10, 0.01) for k in range(10)]
    assert len(probe.lrs) == 10
    for (lr, mom), seen_lr, seen_mom in zip(expected, probe.lrs, probe.moms):
        assert seen_lr == [pytest.approx(lr, rel=1e-12)]
        assert seen_mom == [pytest.approx(mom, rel=1e-12)]
    assert sched.hps["lr"] == [pytest.approx(lr, rel=1e-12) for lr, _ in expected]


def test_counting_follows_accumulation_and_limit_train_batches(tmp_path):
    # 8 batches, 5 used, 2 per step: ceil(5/2) = 3 steps per epoch, 6 over 2 epochs.
    by_epochs = StepProbe()
    trainer(
        tmp_path,
        max_epochs=2,
        limit_train_batches=5,
        accumulate_grad_batches=2,
        callbacks=[OneCycleSchedule(0.1), by_epochs],
    ).fit(TinyModule(n_batches=8))
    assert [lr for (lr,) in by_epochs.lrs] == [
        pytest.approx(one_cycle(k / 6, 0.1)[0], rel=1e-12) for k in range(6)
    ]
    # The same schedule when the length is given as max_steps instead.
    by_steps = StepProbe()
    trainer(
        tmp_path,
        max_steps=6,
        limit_train_batches=5,
        accumulate_grad_batches=2,
        callbacks=[OneCycleSchedule(0.1), by_steps],
    ).fit(TinyModule(n_batches=8))
    assert by_steps.lrs == by_epochs.lrs


def test_discriminative_lrs_keep_their_ratio(tmp_path):
    def two_groups(m):
        groups = [{"params": m.body.parameters(), "lr": 1e-3}, {"params": m.head.parameters()}]
        return torch.optim.SGD(groups, lr=1e-2, momentum=0.9)

    probe = StepProbe()
    trainer(tmp_path, max_epochs=1, callbacks=[OneCycleSchedule(), probe]).fit(
        TinyModule(two_groups)
    )
    for k, (body, head) in enumerate(probe.lrs):
        assert head == pytest.approx(one_cycle(k / 5, 1e-2)[0], rel=1e-12)
        assert head / body == pytest.approx(10.0, rel=1e-12)


def test_accel_optimizer_with_user_callbacks_gets_lr_and_mom_annealed(tmp_path):
    def chapter_sgd(m):  # the chapter's momentum SGD built from its two callbacks
        return AccelOptimizer(m.parameters(), [average_grad, momentum_step], lr=0.03, mom=0.9)

    probe = StepProbe()
    trainer(tmp_path, max_epochs=2, callbacks=[OneCycleSchedule(0.03), probe]).fit(
        TinyModule(chapter_sgd)
    )
    for k, (lr, mom) in enumerate(zip(probe.lrs, probe.moms)):
        exp_lr, exp_mom = one_cycle(k / 10, 0.03)
        assert lr == [pytest.approx(exp_lr, rel=1e-12)]
        assert mom == [pytest.approx(exp_mom, rel=1e-12)]


def test_schedule_wins_over_a_torch_lr_scheduler_and_says_so(tmp_path):
    def step_lr(opt):
        return {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.1), "interval": "step"}

    probe = StepProbe()
    with pytest.warns(UserWarning, match="StepLR.*overwritten"):
        trainer(tmp_path, max_epochs=1, callbacks=[OneCycleSchedule(0.01), probe]).fit(
            TinyModule(scheduler=step_lr)
        )
    assert [lr for (lr,) in probe.lrs] == [
        pytest.approx(one_cycle(k / 5, 0.01)[0], rel=1e-12) for k in range(5)
    ]


def test_resuming_mid_cycle_continues_the_schedule(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_epochs=1, save_top_k=-1)
    full = StepProbe()
    trainer(
        tmp_path,
        max_epochs=4,
        enable_checkpointing=True,
        callbacks=[OneCycleSchedule(), full, ckpt],
    ).fit(TinyModule(n_batches=3))
    assert len(full.lrs) == 12
    mid = tmp_path / "ckpt" / "epoch=1-step=6.ckpt"
    assert mid.exists()

    # The resumed module would start at a different lr: the schedule must keep the original one.
    def other_lr(m):
        return torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9)

    resumed = StepProbe()
    trainer(tmp_path, max_epochs=4, callbacks=[OneCycleSchedule(), resumed]).fit(
        TinyModule(other_lr, n_batches=3), ckpt_path=mid
    )
    assert resumed.lrs == full.lrs[6:]
    assert resumed.moms == full.moms[6:]
    assert [lr for (lr,) in resumed.lrs] == [
        pytest.approx(one_cycle(k / 12, 0.01)[0], rel=1e-12) for k in range(6, 12)
    ]


def test_unknown_hyper_parameter_fails_before_training(tmp_path):
    module = TinyModule()
    before = [p.detach().clone() for p in module.parameters()]
    probe = StepProbe()
    sched = HyperScheduleCallback({"sqr_mom": SchedNo(0.99)})  # torch SGD has no sqr_mom
    with pytest.raises(ValueError, match="'sqr_mom'.*no such hyper-parameter; it has: .*lr"):
        trainer(tmp_path, max_epochs=1, callbacks=[sched, probe]).fit(module)
    assert probe.lrs == []
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_unbounded_training_is_refused(tmp_path):
    with pytest.raises(ValueError, match="finite number of training steps"):
        trainer(tmp_path, max_epochs=-1, callbacks=[OneCycleSchedule(0.01)]).fit(TinyModule())


def test_bad_scheds_argument():
    with pytest.raises(TypeError, match="mapping of hyper-parameter name to schedule"):
        HyperScheduleCallback([SchedNo(1)])
    with pytest.raises(TypeError, match="schedule for 'lr' must be a callable"):
        HyperScheduleCallback({"lr": 0.1})


def test_two_optimizers_are_refused(tmp_path):
    class TwoOptimizers(TinyModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            return None

        def configure_optimizers(self):
            return [
                torch.optim.SGD(self.body.parameters(), lr=0.1),
                torch.optim.SGD(self.head.parameters(), lr=0.1),
            ]

    with pytest.raises(ValueError, match="exactly one optimizer, but the module configures 2"):
        trainer(tmp_path, max_epochs=1, callbacks=[OneCycleSchedule(0.01)]).fit(TwoOptimizers())
