"""The event sequence in real fits, the learner attributes in every event, and what callbacks
can change (each change measured on the loss and the weights against a hand-written loop)."""

from __future__ import annotations

import copy
import math

import lightning.pytorch as pl
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from lightning_accel import (
    AccelModule,
    Callback,
    CallbackBridge,
    CancelBatchException,
    CancelFitException,
    CancelStepException,
    TerminateOnNaNCallback,
)
from lightning_accel.optim.recipes import SGD

from ..loop.reference import EventLog, Reference
from ..tiny import PlainModule, loaders
from ..tiny import trainer as make_trainer

LR = 0.1
TRAIN_EVENTS = {"before_train", "after_train", "after_cancel_train"}
BATCH_EVENTS = {
    "before_batch", "after_pred", "after_loss", "before_backward", "after_backward",
    "before_step", "after_step", "after_batch",
}  # fmt: skip


def fit(tmp_path, cbs, n_epoch, n_train, n_valid, module=None, **trainer_kwargs):
    train_dl, valid_dl = loaders(n_train, max(n_valid, 1))
    module = module or AccelModule(nn.Linear(3, 1), nn.functional.mse_loss, SGD, lr=LR, cbs=cbs)
    trainer_kwargs = {"num_sanity_val_steps": 2, **trainer_kwargs}
    trainer = make_trainer(tmp_path, max_epochs=n_epoch, **trainer_kwargs)
    trainer.fit(module, train_dl, valid_dl if n_valid else None)
    return module, trainer


@pytest.mark.parametrize(("n_epoch", "n_train", "n_valid"), [(1, 1, 1), (2, 3, 2), (3, 2, 3)])
def test_sequence_is_the_chapters_and_sanity_check_emits_nothing(
    tmp_path, n_epoch, n_train, n_valid
):
    log = EventLog()
    fit(tmp_path, [log], n_epoch, n_train, n_valid, num_sanity_val_steps=2)
    assert log.seq == Reference(n_epoch, n_train, n_valid).run().seq


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n_epoch=st.integers(1, 2),
    n_train=st.integers(1, 4),
    n_valid=st.integers(0, 2),
    accumulate=st.integers(1, 3),
)
def test_sequence_for_any_shape(tmp_path, n_epoch, n_train, n_valid, accumulate):
    log = EventLog()
    fit(tmp_path, [log], n_epoch, n_train, n_valid, accumulate_grad_batches=accumulate)
    expected = Reference(n_epoch, n_train, n_valid or None, accumulate).run().seq
    assert log.seq == expected


def test_no_validation_loader_and_limit_val_batches_zero(tmp_path):
    expected = Reference(2, 2, None).run().seq
    log = EventLog()
    fit(tmp_path / "a", [log], 2, 2, 0)
    assert log.seq == expected
    log = EventLog()
    fit(tmp_path / "b", [log], 2, 2, 2, limit_val_batches=0)
    assert log.seq == expected


def test_validation_in_the_middle_of_the_epoch(tmp_path):
    log = EventLog()
    fit(tmp_path, [log], 2, 4, 2, val_check_interval=0.5)
    train = ["before_batch", "after_pred", "after_loss", "before_backward", "after_backward",
             "before_step", "after_step", "after_batch"]  # fmt: skip
    valid = ["before_validate", *["before_batch", "after_pred", "after_loss", "after_batch"] * 2,
             "after_validate"]  # fmt: skip
    epoch = ["before_epoch", "before_train", *train * 2, *valid, *train * 2, "after_train",
             *valid, "after_epoch"]  # fmt: skip
    assert log.seq == ["before_fit", *epoch * 2, "after_fit"]
    for snap in log.snapshots:
        if snap["event"] == "after_step":
            assert snap["training"] and snap["n_iter"] == 4 and snap["dl"] is not None
            assert snap["dl"] is log.learn.trainer.train_dataloader


def test_limit_train_batches_sets_n_iter(tmp_path):
    log = EventLog()
    fit(tmp_path, [log], 1, 4, 1, limit_train_batches=2)
    assert log.seq == Reference(1, 2, 1).run().seq
    assert {s["n_iter"] for s in log.snapshots if s["event"] == "after_step"} == {2}


def test_attributes_in_every_event(tmp_path):
    n_epoch, n_train, n_valid = 2, 3, 2

    class Check(EventLog):
        def _record(self, name):
            learn = self.learn
            # Always there, from before_fit on.
            assert learn.model is self.learn.pl_module.model
            assert learn.opt is learn.trainer.optimizers[0] and learn.loss_func is not None
            assert learn.dls.train is learn.trainer.train_dataloader or name == "before_fit"
            assert learn.train_eval in learn.cbs and learn.recorder in learn.cbs
            assert learn.n_epoch == n_epoch
            if name in BATCH_EVENTS:
                assert isinstance(learn.xb, tuple) and isinstance(learn.yb, tuple)
                assert learn.x is learn.xb[0] and learn.y is learn.yb[0]
                assert (learn.pred is None) == (name == "before_batch")
                assert (learn.loss is None) == (name in ("before_batch", "after_pred"))
            super()._record(name)

    log = Check()
    module, trainer = fit(tmp_path, [log], n_epoch, n_train, n_valid)
    train_dl, valid_dl = trainer.train_dataloader, trainer.val_dataloaders
    phase = None
    n_train_batches = 0
    for snap in log.snapshots:
        name = snap["event"]
        if name in ("before_train", "before_validate"):
            phase = name
        if name in BATCH_EVENTS:
            training = phase == "before_train"
            assert snap["training"] is training
            assert snap["dl"] is (train_dl if training else valid_dl)
            assert snap["n_iter"] == (n_train if training else n_valid)
            assert 0 <= snap["iter"] < snap["n_iter"]
        if name == "after_batch" and phase == "before_train":
            n_train_batches += 1
            # The log runs before TrainEvalCallback: the counters do not include this batch yet.
            assert snap["train_iter"] == n_train_batches - 1
            assert snap["pct_train"] == pytest.approx((n_train_batches - 1) / (n_epoch * n_train))
        if name == "before_train":
            assert snap["pct_train"] == pytest.approx(snap["epoch"] / n_epoch)
    epochs = [s["epoch"] for s in log.snapshots if s["event"] == "before_epoch"]
    assert epochs == list(range(n_epoch))
    assert log.snapshots[-1]["pct_train"] == pytest.approx(1.0)
    assert module.bridge.learn.train_iter == n_epoch * n_train
    assert not math.isnan(float(module.bridge.learn.smooth_loss))


def _hand_sgd(start, n_train, n_epoch, x_fn, y_fn, pred_fn, loss_scale, grad_scale):
    """SGD by hand with the change applied; returns the model and each batch's final loss."""
    model = copy.deepcopy(start)
    batches = list(loaders(n_train, 1)[0])
    losses = []
    for _ in range(n_epoch):
        for x, y in batches:
            loss = loss_scale * nn.functional.mse_loss(pred_fn(model(x_fn(x))), y_fn(y))
            losses.append(float(loss))
            grads = torch.autograd.grad(loss, list(model.parameters()))
            with torch.no_grad():
                for p, g in zip(model.parameters(), grads):
                    p -= LR * grad_scale * g
    return model, losses


_IDENTITY = (lambda x: x, lambda y: y, lambda p: p, 1.0, 1.0)
REWRITES = {
    # what -> (x_fn, y_fn, pred_fn, loss_scale, grad_scale) of the hand-written loop
    "xb": (lambda x: x * 2, lambda y: y, lambda p: p, 1.0, 1.0),
    "yb": (lambda x: x, lambda y: y + 1, lambda p: p, 1.0, 1.0),
    "pred": (lambda x: x, lambda y: y, lambda p: p * 2 - 1, 1.0, 1.0),
    "loss": (lambda x: x, lambda y: y, lambda p: p, 3.0, 1.0),
    "grads": (lambda x: x, lambda y: y, lambda p: p, 1.0, 0.5),
}


@pytest.mark.parametrize("what", list(REWRITES))
def test_callbacks_change_what_the_loop_uses(tmp_path, what):
    class Change(Callback):
        def __init__(self):
            self.losses = []

        def before_batch(self):
            if what == "xb" and self.training:
                self.learn.xb = (self.x * 2,)
            if what == "yb" and self.training:
                self.learn.yb = (self.y + 1,)

        def after_pred(self):
            if what == "pred" and self.training:
                self.learn.pred = self.pred * 2 - 1

        def after_loss(self):
            if what == "loss" and self.training:
                self.learn.loss = self.loss * 3  # back-propagated: gradients triple

        def after_backward(self):
            if what == "grads":
                for p in self.model.parameters():
                    p.grad.mul_(0.5)

        def after_batch(self):
            if self.training:
                self.losses.append(float(self.loss))

    torch.manual_seed(0)
    start = nn.Linear(3, 1)
    change = Change()
    module = AccelModule(copy.deepcopy(start), nn.functional.mse_loss, SGD, lr=LR, cbs=[change])
    fit(tmp_path, None, 2, 3, 1, module=module)
    want, want_losses = _hand_sgd(start, 3, 2, *REWRITES[what])
    unchanged, plain_losses = _hand_sgd(start, 3, 2, *_IDENTITY)
    # The change is real: the loss and the weights differ from an unchanged loop's...
    assert want_losses != pytest.approx(plain_losses, rel=1e-3)
    assert not torch.allclose(want.weight, unchanged.weight, atol=1e-4)
    # ...and the loop applied exactly it.
    assert change.losses == pytest.approx(want_losses, rel=1e-5)
    for got, exp in zip(module.model.parameters(), want.parameters()):
        torch.testing.assert_close(got, exp)


def test_plain_lightning_module_gets_every_event_but_after_pred_and_after_loss(tmp_path):
    log = EventLog()
    module = PlainModule(lr=LR)
    train_dl, valid_dl = loaders(3, 2)
    make_trainer(tmp_path, callbacks=[CallbackBridge(log)], num_sanity_val_steps=2).fit(
        module, train_dl, valid_dl
    )
    expected = [e for e in Reference(2, 3, 2).run().seq if e not in ("after_pred", "after_loss")]
    assert log.seq == expected


def test_plain_lightning_module_cancel_batch_skips_the_step_and_the_rest_of_the_batch(tmp_path):
    class SkipOdd(Callback):
        def after_backward(self):
            if self.iter % 2 == 1:
                raise CancelBatchException

    log = EventLog()
    module = PlainModule(lr=LR)
    torch.manual_seed(0)
    start = copy.deepcopy(module.model)
    make_trainer(tmp_path, max_epochs=1, callbacks=[CallbackBridge(SkipOdd(), log)]).fit(
        module, *loaders(3, 1)
    )
    assert log.seq.count("after_cancel_batch") == 1 and log.seq.count("after_step") == 2
    # Hand SGD over batches 0 and 2 only.
    batches = list(loaders(3, 1)[0])
    for x, y in (batches[0], batches[2]):
        start.zero_grad()
        nn.functional.mse_loss(start(x), y).backward()
        with torch.no_grad():
            for p in start.parameters():
                p -= LR * p.grad
    for got, exp in zip(module.model.parameters(), start.parameters()):
        torch.testing.assert_close(got, exp)


def test_plain_lightning_module_cancel_step_skips_the_update(tmp_path):
    class SkipAll(Callback):
        def before_step(self):
            raise CancelStepException

    module = PlainModule(lr=LR)
    before = copy.deepcopy(module.model.state_dict())
    bridge = CallbackBridge(SkipAll())
    make_trainer(tmp_path, callbacks=[bridge]).fit(module, *loaders(3, 2))
    for k, v in module.model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    losses = bridge.learn.recorder.losses
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)


def test_cancel_fit_ends_fit_normally_with_loggers_and_checkpoints_finalized(tmp_path):
    class StopAt(Callback):
        def after_batch(self):
            if self.training and self.train_iter == 4:
                raise CancelFitException

    log = EventLog()
    module = AccelModule(nn.Linear(3, 1), nn.functional.mse_loss, SGD, lr=LR, cbs=[StopAt(), log])
    logger = CSVLogger(tmp_path, name="csv")
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = make_trainer(
        tmp_path, max_epochs=5, logger=logger, callbacks=[ckpt], enable_checkpointing=True
    )
    trainer.fit(module, *loaders(3, 2))
    assert trainer.state.status == "finished"
    assert log.seq[-2:] == ["after_cancel_fit", "after_fit"]
    assert trainer.current_epoch == 2  # stopped in the second epoch
    assert (tmp_path / "ckpt" / "last.ckpt").exists()
    assert (tmp_path / "csv" / "version_0" / "metrics.csv").exists()


def test_an_error_in_a_callback_leaves_the_trainer_reusable(tmp_path):
    class Fails(Callback):
        def __init__(self):
            self.armed = True

        def after_loss(self):
            if self.armed and self.train_iter == 2:
                raise ValueError("boom")

    bad = Fails()
    log = EventLog()
    module = AccelModule(nn.Linear(3, 1), nn.functional.mse_loss, SGD, lr=LR, cbs=[bad, log])
    trainer = make_trainer(tmp_path, max_epochs=2)
    with pytest.raises(ValueError, match="`Fails`.*`after_loss`.*boom"):
        trainer.fit(module, *loaders(3, 2))
    bad.armed = False
    log.seq.clear()
    trainer.fit(module, *loaders(3, 2))
    assert log.seq[0] == "before_fit" and log.seq[-1] == "after_fit"
    assert log.seq.count("after_epoch") == 2


class TwoOptimizers(pl.LightningModule):
    """Manual optimization with two optimizers, each stepping once per batch."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.first, self.second = nn.Linear(3, 1), nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        for net, opt in zip((self.first, self.second), self.optimizers()):
            self.manual_backward(nn.functional.mse_loss(net(x), y))
            opt.step()
            opt.zero_grad()

    def configure_optimizers(self):
        return [torch.optim.SGD(net.parameters(), lr=LR) for net in (self.first, self.second)]


def test_manual_optimization_gets_a_backward_and_a_step_per_optimizer(tmp_path):
    class SkipFirstOptimizer(Callback):
        def __init__(self):
            self.steps = 0

        def before_step(self):
            self.steps += 1
            if self.steps % 2 == 1:  # every batch's first optimizer
                raise CancelStepException

    log = EventLog()
    module = TwoOptimizers()
    first, second = copy.deepcopy(module.first), copy.deepcopy(module.second)
    bridge = CallbackBridge(SkipFirstOptimizer(), log)
    make_trainer(tmp_path, max_epochs=1, callbacks=[bridge]).fit(module, loaders(2, 0)[0])
    step = ["before_backward", "after_backward", "before_step"]
    skipped, stepped = [*step, "after_cancel_step", "after_step"], [*step, "after_step"]
    batch = ["before_batch", *skipped, *stepped, "after_batch"]
    assert log.seq == ["before_fit", "before_epoch", "before_train", *batch * 2, "after_train",
                       "after_epoch", "after_fit"]  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(module.first.parameters(), first.parameters()))
    assert not torch.equal(module.second.weight, second.weight)


def test_a_constraint_naming_no_attached_callback_warns_when_the_fit_starts(tmp_path):
    bridge = CallbackBridge(TerminateOnNaNCallback(), recorder=False)
    fitter = make_trainer(tmp_path, max_epochs=1, callbacks=[bridge])
    with pytest.warns(UserWarning, match=r"TerminateOnNaNCallback\.run_before = Recorder names no"):
        fitter.fit(PlainModule(lr=LR), loaders(1, 0)[0])
