"""TerminateOnNaNCallback stops before a non-finite loss reaches the weights or a checkpoint.

The fit runs with Lightning's default `ModelCheckpoint(save_last=True)` (one checkpoint per
epoch, the older one deleted): every checkpoint left on disk, and the module itself, must hold
the weights and optimizer state of the last finite step, which a fit stopped by `max_steps`
right before the bad batch gives independently.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lightning_accel import AccelModule, CallbackBridge, TerminateOnNaNCallback

from ..loop.reference import EventLog
from ..tiny import PlainModule, loaders, trainer

N_TRAIN, BAD_CALL = 4, 7  # the 7th training loss (epoch 1, batch 2) is NaN
LR = 0.01


class NaNAt(nn.Module):
    """MSE, except that the `bad`-th training call returns `value` times the loss."""

    def __init__(self, bad: int, value: float = float("nan")):
        super().__init__()
        self.calls, self.bad, self.value = 0, bad, value

    def forward(self, pred, y):
        loss = nn.functional.mse_loss(pred, y)
        if pred.requires_grad:
            self.calls += 1
            if self.calls == self.bad:
                return loss * self.value
        return loss


class PlainNaN(PlainModule):
    def __init__(self, bad: int, value: float = float("nan")):
        super().__init__(opt=lambda params: torch.optim.Adam(params, lr=LR))
        self.loss = NaNAt(bad, value)

    def training_step(self, batch, batch_idx):
        return self.loss(self.model(batch[0]), batch[1])


def _module(kind: str, bad: int, value: float, cbs=()):
    torch.manual_seed(0)
    if kind == "accel":
        module = AccelModule(nn.Linear(3, 1), NaNAt(bad, value), lr=LR, cbs=list(cbs))
        return module, []
    return PlainNaN(bad, value), [CallbackBridge(*cbs)]


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


@pytest.mark.parametrize("kind", ["accel", "plain"])
@pytest.mark.parametrize("with_validation", [True, False])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_loss_never_reaches_weights_optimizer_or_checkpoints(
    tmp_path, caplog, kind, with_validation, value
):
    n_valid = 2 if with_validation else 0
    log = EventLog()
    module, callbacks = _module(kind, BAD_CALL, value, [TerminateOnNaNCallback(), log])
    ckpt_dir = tmp_path / "ckpt"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, save_last=True)
    fitter = trainer(
        tmp_path, max_epochs=3, enable_checkpointing=True, callbacks=[checkpoint, *callbacks]
    )
    with caplog.at_level(logging.WARNING, logger="lightning_accel"):
        fitter.fit(module, *loaders(N_TRAIN, n_valid))
    assert log.seq[-2:] == ["after_cancel_fit", "after_fit"]
    assert fitter.state.status == "finished"

    # One line announces it: phase, value, epoch and batch.
    lines = [r.getMessage() for r in caplog.records if "TerminateOnNaNCallback" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert f"training loss is {value}" in lines[0] and "epoch 1, batch 2" in lines[0]

    # The weights and optimizer state are those of the last finite step (the 6th).
    ref, ref_callbacks = _module(kind, 0, 1.0, [])
    trainer(tmp_path / "ref", max_steps=BAD_CALL - 1, callbacks=ref_callbacks).fit(
        ref, *loaders(N_TRAIN, n_valid)
    )
    for got, want in zip(module.parameters(), ref.parameters()):
        torch.testing.assert_close(got, want)
    opt, ref_opt = fitter.optimizers[0], ref.trainer.optimizers[0]
    for got, want in zip(_tensors(opt.state_dict()), _tensors(ref_opt.state_dict())):
        torch.testing.assert_close(got, want)

    # Every checkpoint on disk is finite; the last one holds those same weights.
    files = sorted(ckpt_dir.glob("*.ckpt"))
    assert [f.name for f in files if f.name != "last.ckpt"]  # the good checkpoint survived
    for path in files:
        saved = torch.load(path, weights_only=False)
        for tensor in _tensors([saved["state_dict"], saved["optimizer_states"]]):
            assert bool(torch.isfinite(tensor).all()), path.name
    last = torch.load(ckpt_dir / "last.ckpt", weights_only=False)["state_dict"]
    for name, value_ in module.state_dict().items():
        torch.testing.assert_close(last[name], value_)


def test_it_stops_before_the_recorder_sees_the_loss_and_checks_validation_too(tmp_path):
    class NaNValid(nn.Module):
        def forward(self, pred, y):
            loss = nn.functional.mse_loss(pred, y)
            return loss if pred.requires_grad else loss * math.nan

    class LateLog(EventLog):
        order = 100  # after the Recorder: sees what the Recorder saw

    cb, log = TerminateOnNaNCallback(), LateLog()
    module = AccelModule(nn.Linear(3, 1), NaNValid(), lr=LR, cbs=[cb, log])
    trainer(tmp_path, max_epochs=2).fit(module, *loaders(3, 2))
    recorder = module.recorder
    assert module.bridge.cbs.index(cb) < module.bridge.cbs.index(recorder)
    assert log.seq.count("after_batch") == 3  # 3 training batches; the NaN validation batch none
    assert log.seq[-2:] == ["after_cancel_fit", "after_fit"]
    assert len(recorder.losses) == 3 and all(math.isfinite(v) for v in recorder.losses)
