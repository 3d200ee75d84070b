"""Every Cancel exception, raised from every event, does in a real Trainer what the chapter does.

The full matrix runs under every configuration: the chapter's `Reference` loop (nested try
blocks) gives the expected events and which backward passes and steps run; a hand-written
PyTorch loop applying exactly those gives the expected weights; and Lightning's own loop must
follow (no training batch runs after the batch in which a training part ended).
"""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn

from lightning_accel import AccelModule, CallbackBridge
from lightning_accel.optim.recipes import SGD

from ..loop.reference import CANCELS, EventLog, Reference, single_raise_cases
from ..tiny import PlainModule, loaders, trainer

N_EPOCH, N_TRAIN, N_VALID, LR = 2, 3, 2, 0.1
PLAIN_MISSING = ("after_pred", "after_loss")


def _fp16_with_scaler() -> dict:
    # Lightning maps precision="16-mixed" to bf16 on CPU; this plugin runs the real float16 path
    # with a GradScaler (unscale, inf checks, scaler.step), so step skipping is tested under it.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    return {"plugins": [MixedPrecision("16-mixed", "cpu", scaler)]}


# name -> (AccelModule kwargs or "plain", Trainer kwargs (or a factory of them), accumulation, tol)
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
FAST = ("accel-sgd", "plain-module")


def _params():
    params = []
    for config, (module_kwargs, _, accumulate, _) in CONFIGS.items():
        allowed, _ = single_raise_cases(N_EPOCH, N_TRAIN, N_VALID, accumulate)
        if module_kwargs == "plain":
            allowed = [c for c in allowed if c[1] not in PLAIN_MISSING]
        marks = () if config in FAST else (pytest.mark.slow,)
        params += [
            pytest.param(config, *case, id=f"{config}-{case[0]}-{case[1]}", marks=marks)
            for case in allowed
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


def lightning_batches(seq: list[str]) -> list[int]:
    """Training batches Lightning must run per epoch for the chapter's sequence `seq`.

    Lightning leaves a training part that ended early after the batch it ended in; when it
    ended before any batch, at its first batch (none for a cancelled fit, which Lightning stops
    like an early stop); and it runs no epoch after a cancelled fit.
    """
    counts = [0] * N_EPOCH
    epoch, phase, live = -1, None, 0
    for name in seq:
        if name == "before_epoch":
            epoch, phase, live = epoch + 1, "starting", 0
            counts[epoch] = N_TRAIN
        elif name == "before_train":
            phase = "training"
        elif name == "before_batch" and phase == "training":
            live += 1
        elif name == "after_train":
            phase = "trained"
        elif name in ("after_cancel_train", "after_cancel_epoch", "after_cancel_fit") and phase in (
            "starting",
            "training",
        ):
            counts[epoch] = live or (0 if name == "after_cancel_fit" else 1)
    return counts


class BatchCounter(pl.Callback):
    """Training batches Lightning runs, per epoch (a plain Lightning callback)."""

    def __init__(self):
        self.per_epoch = [0] * N_EPOCH

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.per_epoch[trainer.current_epoch] += 1


def fit_with(tmp_path, log: EventLog, module_kwargs=None, **trainer_kwargs):
    counter = BatchCounter()
    train_dl, valid_dl = loaders(N_TRAIN, N_VALID)
    if module_kwargs == "plain":
        module = PlainModule(lr=LR)
        callbacks = [CallbackBridge(log), counter]
    else:
        module_kwargs = {"opt_func": SGD, **(module_kwargs or {})}
        module = AccelModule(
            nn.Linear(3, 1), nn.functional.mse_loss, lr=LR, cbs=[log], **module_kwargs
        )
        callbacks = [counter]
    fitter = trainer(
        tmp_path, max_epochs=N_EPOCH, num_sanity_val_steps=1, callbacks=callbacks, **trainer_kwargs
    )
    fitter.fit(module, train_dl, valid_dl)
    return module, counter


@pytest.mark.parametrize(("config", "kind", "when", "at"), _params())
def test_cancel_follows_the_chapter(tmp_path, config, kind, when, at):
    module_kwargs, trainer_kwargs, accumulate, tol = CONFIGS[config]
    if callable(trainer_kwargs):
        trainer_kwargs = trainer_kwargs()
    exc = CANCELS[kind]
    reference = Reference.raising(N_EPOCH, N_TRAIN, N_VALID, accumulate, exc, when, at).run()
    log = EventLog(exc, when, at)
    torch.manual_seed(0)
    start = copy.deepcopy(nn.Linear(3, 1))
    torch.manual_seed(0)
    module, counter = fit_with(tmp_path, log, module_kwargs, **trainer_kwargs)
    if module_kwargs == "plain":
        assert log.seq == [e for e in reference.seq if e not in PLAIN_MISSING]
    else:
        assert log.seq == reference.seq
    assert counter.per_epoch == lightning_batches(reference.seq)
    want = expected_weights(start, reference, accumulate)
    for got, exp in zip(module.model.parameters(), want.parameters()):
        torch.testing.assert_close(got, exp, atol=tol, rtol=tol)


_, _REFUSED = single_raise_cases(N_EPOCH, N_TRAIN, N_VALID)


@pytest.mark.parametrize(("kind", "when", "at"), _REFUSED, ids=[f"{k}-{w}" for k, w, _ in _REFUSED])
def test_cancel_outside_its_part_is_an_error(tmp_path, kind, when, at):
    log = EventLog(CANCELS[kind], when, at)
    with pytest.raises(RuntimeError, match=f"{CANCELS[kind].__name__} raised in `{when}`"):
        fit_with(tmp_path, log)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="16-mixed needs a CUDA GradScaler")
@pytest.mark.parametrize("kind", ["batch", "step", "train", "fit"])
def test_cancel_under_16_mixed(tmp_path, kind):
    when = {"batch": "after_backward", "step": "before_step"}.get(kind, "after_loss")
    reference = Reference.raising(N_EPOCH, N_TRAIN, N_VALID, 1, CANCELS[kind], when, 1).run()
    log = EventLog(CANCELS[kind], when, 1)
    fit_with(tmp_path, log, accelerator="gpu", precision="16-mixed")
    assert log.seq == reference.seq
