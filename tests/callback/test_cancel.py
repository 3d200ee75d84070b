"""Every Cancel exception, raised from every event, does what the chapter's loop does.

The expected event sequence and the expected parameter updates come from `Reference`, a model
of the chapter's nested try blocks, and from a hand-written PyTorch loop that applies exactly
the backward passes and steps the reference says happen.
"""

from __future__ import annotations

import copy
import os

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn

from lightning_accel import AccelModule, CallbackBridge
from lightning_accel.loop.events import EVENTS
from lightning_accel.optim.recipes import SGD

from .helpers import CANCELS, Escaped, EventLog, Reference, count, loaders, make_trainer

N_EPOCH, N_TRAIN, N_VALID, LR = 2, 3, 2, 0.1
# Set ACCEL_FULL_CANCEL_MATRIX=1 to run every case under every configuration (slow).
FULL = bool(os.environ.get("ACCEL_FULL_CANCEL_MATRIX"))
RAISE_POINTS = [e for e in EVENTS if e != "after_create"]


def _fp16_with_scaler() -> dict:
    # Lightning maps precision="16-mixed" to bf16 on CPU; this plugin runs the real float16 path
    # with a GradScaler (unscale, inf checks, scaler.step), so step skipping is tested under it.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    return {"plugins": [MixedPrecision("16-mixed", "cpu", scaler)]}


# name -> (AccelModule kwargs, Trainer kwargs (or a factory of them), accumulation, tolerance)
CONFIGS = {
    "accel-sgd": ({}, {}, 1, 1e-6),
    "accumulate-2": ({}, {"accumulate_grad_batches": 2}, 2, 1e-6),
    "bf16-mixed": ({}, {"precision": "bf16-mixed"}, 1, 3e-2),
    "torch-sgd": ({"opt_func": torch.optim.SGD}, {}, 1, 1e-6),
    "fp16-scaler": ({}, _fp16_with_scaler, 1, 3e-2),
    "fp16-scaler-torch-sgd": ({"opt_func": torch.optim.SGD}, _fp16_with_scaler, 1, 3e-2),
    # A plain LightningModule: no after_pred/after_loss, so no raising there.
    "plain-module": ("plain", {}, 1, 1e-6),
    "plain-module-accumulate-2": ("plain", {"accumulate_grad_batches": 2}, 2, 1e-6),
}
PLAIN_MISSING = ("after_pred", "after_loss")


def _cases(accumulate: int):
    plain = Reference(N_EPOCH, N_TRAIN, N_VALID, accumulate).run().seq
    allowed, refused = [], []
    for kind, exc in CANCELS.items():
        for when in RAISE_POINTS:
            if count(plain, when) == 0:
                continue
            at = 1 if count(plain, when) > 1 else 0
            try:
                Reference(N_EPOCH, N_TRAIN, N_VALID, accumulate, exc, when, at).run()
            except Escaped:
                refused.append((kind, when, at))
            else:
                allowed.append((kind, when, at))
    return allowed, refused


def _params():
    params = []
    for config, (module_kwargs, _, accumulate, _) in CONFIGS.items():
        allowed, _ = _cases(accumulate)
        # The full matrix once; every third case for the variants, to keep the suite fast.
        if module_kwargs == "plain":
            allowed = [c for c in allowed if c[1] not in PLAIN_MISSING]
        chosen = allowed if config in ("accel-sgd", "plain-module") or FULL else allowed[::3]
        params += [
            pytest.param(config, *case, id=f"{config}-{case[0]}-{case[1]}") for case in chosen
        ]
    return params


def expected_weights(model: nn.Module, reference: Reference, accumulate: int) -> nn.Module:
    """Plain PyTorch SGD over exactly the backward passes and steps the reference lets happen."""
    model = copy.deepcopy(model)
    batches = list(loaders(N_TRAIN, N_VALID)[0])
    grads = None
    for _, i, did_backward, did_step in reference.steps:
        if i % accumulate == 0:  # Lightning zeroes the gradients at each window's first batch
            grads = [torch.zeros_like(p) for p in model.parameters()]
        if did_backward:
            x, y = batches[i]
            loss = nn.functional.mse_loss(model(x), y) / accumulate
            for g, new in zip(grads, torch.autograd.grad(loss, list(model.parameters()))):
                g += new
        if did_step:
            with torch.no_grad():
                for p, g in zip(model.parameters(), grads):
                    p -= LR * g
    return model


class PlainModule(pl.LightningModule):
    """A LightningModule of its own (no AccelModule): the bridge sits in the Trainer."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        return nn.functional.mse_loss(self.model(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        return nn.functional.mse_loss(self.model(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


def fit_with(tmp_path, log: EventLog, module_kwargs=None, **trainer_kwargs) -> AccelModule:
    if module_kwargs == "plain":
        module = PlainModule()
        train_dl, valid_dl = loaders(N_TRAIN, N_VALID)
        trainer = make_trainer(
            tmp_path, max_epochs=N_EPOCH, callbacks=[CallbackBridge(log)], **trainer_kwargs
        )
        trainer.fit(module, train_dl, valid_dl)
        return module
    module_kwargs = {"opt_func": SGD, **(module_kwargs or {})}
    module = AccelModule(nn.Linear(3, 1), nn.functional.mse_loss, lr=LR, cbs=[log], **module_kwargs)
    train_dl, valid_dl = loaders(N_TRAIN, N_VALID)
    make_trainer(tmp_path, max_epochs=N_EPOCH, **trainer_kwargs).fit(module, train_dl, valid_dl)
    return module


@pytest.mark.parametrize(("config", "kind", "when", "at"), _params())
def test_cancel_follows_the_chapter(tmp_path, config, kind, when, at):
    module_kwargs, trainer_kwargs, accumulate, tol = CONFIGS[config]
    if callable(trainer_kwargs):
        trainer_kwargs = trainer_kwargs()
    exc = CANCELS[kind]
    reference = Reference(N_EPOCH, N_TRAIN, N_VALID, accumulate, exc, when, at).run()
    log = EventLog(exc, when, at)
    torch.manual_seed(0)
    start = copy.deepcopy(nn.Linear(3, 1))
    torch.manual_seed(0)
    module = fit_with(tmp_path, log, module_kwargs, **trainer_kwargs)
    if module_kwargs == "plain":
        assert log.seq == [e for e in reference.seq if e not in PLAIN_MISSING]
    else:
        assert log.seq == reference.seq
    want = expected_weights(start, reference, accumulate)
    for got, exp in zip(module.model.parameters(), want.parameters()):
        torch.testing.assert_close(got, exp, atol=tol, rtol=tol)


_, _REFUSED = _cases(1)


@pytest.mark.parametrize(
    ("kind", "when", "at"), _REFUSED[::3], ids=[f"{k}-{w}" for k, w, _ in _REFUSED[::3]]
)
def test_cancel_outside_its_part_is_an_error(tmp_path, kind, when, at):
    log = EventLog(CANCELS[kind], when, at)
    with pytest.raises(RuntimeError, match=f"{CANCELS[kind].__name__} raised in `{when}`"):
        fit_with(tmp_path, log)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="16-mixed needs a CUDA GradScaler")
@pytest.mark.parametrize("kind", ["batch", "step", "train", "fit"])
def test_cancel_under_16_mixed(tmp_path, kind):
    when = {"batch": "after_backward", "step": "before_step"}.get(kind, "after_loss")
    reference = Reference(N_EPOCH, N_TRAIN, N_VALID, 1, CANCELS[kind], when, 1).run()
    log = EventLog(CANCELS[kind], when, 1)
    fit_with(tmp_path, log, accelerator="gpu", precision="16-mixed")
    assert log.seq == reference.seq
