"""The shipped callbacks against hand computations, and the chapter's examples as printed."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from lightning_accel import (
    AccelModule,
    Callback,
    CancelFitException,
    GradientClip,
    MixUp,
    ModelResetter,
    Recorder,
    RNNRegularizer,
    TerminateOnNaNCallback,
)
from lightning_accel.optim.recipes import SGD

from ..loop.reference import EventLog
from ..tiny import loaders
from ..tiny import trainer as make_trainer

LR = 0.1


# ---------------------------------------------------------------- the chapter's code, as printed
class ChapterModelResetter(Callback):
    def before_train(self):
        self.model.reset()

    def before_validate(self):
        self.model.reset()

    def after_fit(self):
        self.model.reset()


class ChapterTerminateOnNaNCallback(Callback):
    run_before = Recorder

    def after_batch(self):
        if torch.isinf(self.loss) or torch.isnan(self.loss):
            raise CancelFitException


class Resettable(nn.Linear):
    def __init__(self):
        super().__init__(3, 1)
        self.resets = 0

    def reset(self):
        self.resets += 1


@pytest.mark.parametrize("resetter", [ChapterModelResetter, ModelResetter])
def test_model_resetter(tmp_path, resetter):
    model = Resettable()
    module = AccelModule(model, nn.functional.mse_loss, SGD, lr=LR, cbs=[resetter()])
    make_trainer(tmp_path, max_epochs=3).fit(module, *loaders(2, 1))
    assert model.resets == 3 * 2 + 1  # before_train and before_validate per epoch, after_fit


class NaNAfter(nn.Module):
    """A loss that turns NaN at its `bad`-th training call."""

    def __init__(self, bad: int):
        super().__init__()
        self.calls, self.bad = 0, bad

    def forward(self, pred, y):
        loss = nn.functional.mse_loss(pred, y)
        if pred.requires_grad:
            self.calls += 1
            if self.calls == self.bad:
                return loss * float("nan")
        return loss


@pytest.mark.parametrize("terminate", [ChapterTerminateOnNaNCallback, TerminateOnNaNCallback])
def test_terminate_on_nan_stops_before_the_recorder_sees_it(tmp_path, terminate):
    log = EventLog()
    cb = terminate()
    module = AccelModule(nn.Linear(3, 1), NaNAfter(bad=4), SGD, lr=LR, cbs=[cb, log])
    trainer = make_trainer(tmp_path, max_epochs=3)
    trainer.fit(module, *loaders(3, 1))
    recorder = module.bridge.learn.recorder
    cbs = module.bridge.cbs
    assert cbs.index(cb) < cbs.index(recorder)
    assert log.seq[-2:] == ["after_cancel_fit", "after_fit"]
    assert len(recorder.losses) == 3 and all(math.isfinite(v) for v in recorder.losses)
    assert log.seq.count("before_epoch") == 2 and log.seq.count("after_epoch") == 1
    assert trainer.state.status == "finished"


def test_gradient_clip_matches_hand_clipping(tmp_path):
    torch.manual_seed(0)
    start = nn.Linear(3, 1)
    module = AccelModule(
        copy.deepcopy(start), nn.functional.mse_loss, SGD, lr=LR, cbs=[GradientClip(0.5)]
    )
    make_trainer(tmp_path, max_epochs=1).fit(module, *loaders(3, 1))
    model = copy.deepcopy(start)
    for x, y in loaders(3, 1)[0]:
        grads = torch.autograd.grad(nn.functional.mse_loss(model(x), y), list(model.parameters()))
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
        factor = min(1.0, 0.5 / (float(norm) + 1e-6))
        with torch.no_grad():
            for p, g in zip(model.parameters(), grads):
                p -= LR * factor * g
    for got, exp in zip(module.model.parameters(), model.parameters()):
        torch.testing.assert_close(got, exp)


def test_gradient_clip_rejects_bad_max_norm():
    with pytest.raises(ValueError, match="max_norm must be positive"):
        GradientClip(0)


class Capture(Callback):
    """Keeps the original batch (before MixUp) and what the loop then used."""

    order = -50

    def __init__(self):
        self.seen = []

    def before_batch(self):
        if self.training:
            self.seen.append({"xb": self.xb, "yb": self.yb})

    def after_loss(self):
        if self.training:
            self.seen[-1].update(mixed=self.xb, pred=self.pred.detach(), loss=self.loss.detach())


def test_mixup_mixes_inputs_and_losses_as_published(tmp_path):
    mixup, capture = MixUp(0.4), Capture()
    module = AccelModule(
        nn.Linear(3, 2), nn.functional.cross_entropy, SGD, lr=LR, cbs=[capture, mixup]
    )
    lams, perms = [], []

    class Spy(Callback):
        run_after = MixUp

        def before_batch(self):
            if self.training:
                lams.append(mixup.lam.clone())
                perms.append(mixup.perm.clone())

    module.bridge.add_cbs(Spy())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, generator=g)
    y = torch.randint(0, 2, (16,), generator=g)
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    make_trainer(tmp_path, max_epochs=1).fit(module, dl, dl)
    assert len(capture.seen) == 2
    for seen, lam, perm in zip(capture.seen, lams, perms):
        (x0,), (y0,) = seen["xb"], seen["yb"]
        assert bool((lam >= 0.5).all()) and bool((lam <= 1).all())
        assert sorted(perm.tolist()) == list(range(8))
        want_x = lam[:, None] * x0 + (1 - lam[:, None]) * x0[perm]
        torch.testing.assert_close(seen["mixed"][0], want_x)
        logp = torch.log_softmax(seen["pred"].double(), dim=1)
        own = -logp[torch.arange(8), y0]
        other = -logp[torch.arange(8), y0[perm]]
        want_loss = (lam.double() * own + (1 - lam.double()) * other).mean()
        torch.testing.assert_close(seen["loss"].double(), want_loss, rtol=1e-5, atol=1e-6)
    assert module.bridge.learn.loss_func is nn.functional.cross_entropy  # restored after fit


def test_mixup_leaves_validation_alone(tmp_path):
    class ValidLoss(Callback):
        def __init__(self):
            self.pairs = []

        def after_loss(self):
            if not self.training:
                self.pairs.append((self.x.clone(), self.loss.detach(), self.pred.detach()))

    check = ValidLoss()
    module = AccelModule(
        nn.Linear(3, 1), nn.functional.mse_loss, SGD, lr=LR, cbs=[MixUp(0.4), check]
    )
    train_dl, valid_dl = loaders(2, 2)
    make_trainer(tmp_path, max_epochs=1).fit(module, train_dl, valid_dl)
    for (x, loss, pred), (x0, y0) in zip(check.pairs, valid_dl):
        torch.testing.assert_close(x, x0)
        torch.testing.assert_close(loss, nn.functional.mse_loss(pred, y0))


class TinyRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(2, 4, batch_first=True)
        self.head = nn.Linear(4, 1)
        self.drop = nn.Dropout(0.0)

    def forward(self, x):
        raw, _ = self.rnn(x)
        out = self.drop(raw)
        return self.head(out[:, -1]), [raw], [out]


def test_rnn_regularizer_adds_ar_and_tar(tmp_path):
    class Seen(Callback):
        run_after = RNNRegularizer

        def __init__(self):
            self.items = []

        def after_pred(self):
            self.items.append({"pred": self.pred})

        def after_loss(self):
            self.items[-1].update(loss=self.loss.detach(), training=self.training)

    seen = Seen()
    reg = RNNRegularizer(alpha=2.0, beta=1.0)

    class Raw(Callback):
        run_after = Seen

        def after_loss(self):
            seen.items[-1].update(raw=reg.raw_out.detach(), out=reg.out.detach())

    module = AccelModule(TinyRNN(), nn.functional.mse_loss, SGD, lr=LR, cbs=[reg, seen, Raw()])
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 5, 2, generator=g), torch.randn(8, 1, generator=g)
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    make_trainer(tmp_path, max_epochs=1).fit(module, dl, dl)
    batches = list(dl)
    for item, (_, yb) in zip(seen.items, batches + batches):
        base = nn.functional.mse_loss(item["pred"].detach(), yb)
        if item["training"]:
            ar = 2.0 * item["out"].pow(2).mean()
            tar = 1.0 * (item["raw"][:, 1:] - item["raw"][:, :-1]).pow(2).mean()
            torch.testing.assert_close(item["loss"], base + ar + tar)
        else:
            torch.testing.assert_close(item["loss"], base)


def test_rnn_regularizer_needs_a_three_part_prediction(tmp_path):
    module = AccelModule(nn.Linear(3, 1), nn.functional.mse_loss, SGD, cbs=[RNNRegularizer(1.0)])
    with pytest.raises(TypeError, match=r"RNNRegularizer.*after_pred.*\(output, raw_out, out\)"):
        make_trainer(tmp_path, max_epochs=1).fit(module, *loaders(1, 1))
