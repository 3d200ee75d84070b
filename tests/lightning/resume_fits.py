"""The fits the resume tests compare, and the child process the SIGKILL test kills.

`python -m tests.lightning.resume_fits OUT STEP` trains like `run("accel", "one_cycle", 1, ...)`
with a checkpoint after every step (`OUT/ckpt/last.ckpt`), and at the start of the batch after
step STEP creates `OUT/waiting` and waits there to be killed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torchdata.stateful_dataloader import StatefulDataLoader

from lightning_accel import AccelModule, CallbackBridge, fit, fit_one_cycle
from lightning_accel.optim.recipes import Adam

from ..tiny import PlainModule, loaders, quiet

N_EPOCH, N_TRAIN, N_VALID, LR = 2, 5, 2, 0.01


def make_module(kind: str) -> pl.LightningModule:
    """A fresh, seeded module: "accel" (AccelModule, its Adam) or "plain" (torch Adam)."""
    torch.manual_seed(0)
    if kind == "accel":
        module = AccelModule(nn.Linear(3, 1), nn.functional.mse_loss, Adam, lr=LR)
        module.recorder.print_table = False
        return module
    return PlainModule(opt=lambda params: torch.optim.Adam(params, lr=LR))


def run(kind, how, accumulate, root, cbs=(), callbacks=(), ckpt_path=None, loader=None):
    """One fit of `kind` with `how` ("one_cycle": `fit_one_cycle`, "fit": `fit`)."""
    module = make_module(kind)
    fitter = fit_one_cycle if how == "one_cycle" else fit
    train_dl, valid_dl = loaders(N_TRAIN, N_VALID, loader=loader or StatefulDataLoader)
    trainer_kwargs = quiet(
        root,
        callbacks=[*callbacks],
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        accumulate_grad_batches=accumulate,
    )
    del trainer_kwargs["max_epochs"]  # the fit helpers take n_epoch
    trainer = fitter(
        module,
        N_EPOCH,
        LR,
        cbs=[*cbs],
        train_dataloaders=train_dl,
        val_dataloaders=valid_dl,
        ckpt_path=ckpt_path,
        **trainer_kwargs,
    )
    return module, trainer


def learner_of(trainer: pl.Trainer):
    """The learner of the fit's bridge (the module's own, or the one in the trainer)."""
    return next(cb for cb in trainer.callbacks if isinstance(cb, CallbackBridge)).learn


def every_n_steps(path: Path, n: int, **kwargs) -> ModelCheckpoint:
    return ModelCheckpoint(
        dirpath=path, filename="{step}", every_n_train_steps=n, save_top_k=-1, **kwargs
    )


class WaitToBeKilled(pl.Callback):
    """At the batch after step `step` (its checkpoint is on disk by then), signal and wait."""

    def __init__(self, step: int, marker: Path):
        self.step, self.marker = step, marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            self.marker.touch()
            time.sleep(600)


if __name__ == "__main__":
    torch.set_num_threads(1)
    out, step = Path(sys.argv[1]), int(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = every_n_steps(out / "ckpt", 1, save_last=True)
    run("accel", "one_cycle", 1, out, callbacks=[checkpoint, WaitToBeKilled(step, out / "waiting")])
    sys.exit("the fit ended without being killed")
