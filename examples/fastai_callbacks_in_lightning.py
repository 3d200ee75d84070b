"""Use 2: the chapter's training-loop callbacks in a plain Lightning `Trainer`.

Three callbacks from chapter 16, written exactly as the chapter writes callbacks (events as
methods, training state read as attributes, Cancel exceptions for control flow), run in an
ordinary `LightningModule` through `CallbackBridge`:

- `ModelResetter` resets a stateful model before training and before validation;
- `TerminateOnNaNCallback` stops the fit when the loss is not finite;
- `SkipStepOnBadGradients`, our own, refuses the optimizer step when the gradients are not finite
  or too large (`CancelStepException`), so a bad batch never reaches the weights.

    python examples/fastai_callbacks_in_lightning.py --epochs 3 --nan-at-batch 20
"""

from __future__ import annotations

import argparse
import math

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_accel import (
    SGD,
    Callback,
    CallbackBridge,
    CancelFitException,
    CancelStepException,
    Recorder,
)


class ModelResetter(Callback):
    """Reset the model's state at the start of training and of validation (the chapter's)."""

    def before_train(self):
        self.model.reset()

    def before_validate(self):
        self.model.reset()


class TerminateOnNaNCallback(Callback):
    """Stop training when the loss becomes infinite or NaN (the chapter's)."""

    run_before = Recorder  # so the Recorder never records the bad loss
    # The validation loss reaches the bridge too (validation_step returns it); the chapter's
    # callback watches training only.
    run_valid = False

    def after_batch(self):
        if torch.isinf(self.loss) or torch.isnan(self.loss):
            # Ours, not the chapter's: say why the fit ends, in one line (through Lightning's
            # progress bar when it is shown, so the line does not land inside the bar).
            message = (
                f"TerminateOnNaNCallback: training loss is {self.loss.item()} at epoch "
                f"{self.epoch}, batch {self.iter}; stopping the fit"
            )
            bar = self.learn.trainer.progress_bar_callback
            if bar is not None:
                bar.print(message)
            else:
                print(message)
            raise CancelFitException


class SkipStepOnBadGradients(Callback):
    """Skip the optimizer step when the gradient norm is not finite or exceeds `max_norm`."""

    def __init__(self, max_norm: float = 100.0):
        self.max_norm = max_norm
        self.skipped = 0

    def before_step(self):
        # Gradients are final here; CancelStepException skips just the step and after_step.
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        if not torch.isfinite(norm) or norm > self.max_norm:
            self.skipped += 1
            raise CancelStepException


class SineStreams(Dataset):
    """`n_streams` phase-shifted sine waves cut into consecutive chunks: batch `i` continues
    batch `i - 1`, which is why the model keeps its hidden state between batches."""

    def __init__(
        self, n_batches: int, n_streams: int = 8, chunk: int = 16, nan_at: int | None = None
    ):
        t = torch.arange(n_batches * chunk + 1, dtype=torch.float32) * 0.2
        phases = torch.linspace(0, math.pi, n_streams)[:, None]
        waves = torch.sin(t[None, :] + phases)  # (streams, time)
        self.x = (
            waves[:, :-1].reshape(n_streams, n_batches, chunk).transpose(0, 1)[..., None].clone()
        )
        self.y = (
            waves[:, 1:].reshape(n_streams, n_batches, chunk).transpose(0, 1)[..., None].clone()
        )
        if nan_at is not None:
            self.x[nan_at, 0, 0] = float("nan")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


class NextValueRNN(pl.LightningModule):
    """A GRU predicting the next value of each stream, carrying its hidden state across batches."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.lr = lr
        self.rnn = nn.GRU(1, 16, batch_first=True)
        self.out = nn.Linear(16, 1)
        self.hidden: torch.Tensor | None = None
        self.resets = 0

    def reset(self) -> None:
        """Forget the hidden state (called by ModelResetter)."""
        self.hidden = None
        self.resets += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, hidden = self.rnn(x, self.hidden)
        self.hidden = hidden.detach()  # truncated back-propagation through time
        return self.out(out)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("val_loss", loss)
        return loss  # what the bridge's Recorder averages into the epoch's valid_loss

    def configure_optimizers(self):
        return SGD(self.parameters(), lr=self.lr, mom=0.9)


def main(
    epochs: int = 3,
    n_batches: int = 40,
    nan_at_batch: int | None = None,
    root_dir: str = "runs/fastai_callbacks",
    progress_bar: bool = True,
) -> tuple[pl.Trainer, CallbackBridge, NextValueRNN]:
    """Train with the three callbacks; `nan_at_batch` plants a NaN input in that training batch."""
    pl.seed_everything(0, verbose=False)
    train = DataLoader(SineStreams(n_batches, nan_at=nan_at_batch), batch_size=None)
    valid = DataLoader(SineStreams(max(n_batches // 4, 1)), batch_size=None)
    skipper = SkipStepOnBadGradients(max_norm=100.0)
    bridge = CallbackBridge(ModelResetter(), TerminateOnNaNCallback(), skipper)
    model = NextValueRNN()
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=root_dir,
        callbacks=[bridge],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, train, valid)
    return trainer, bridge, model


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--nan-at-batch", type=int, default=None)
    args = parser.parse_args()
    trainer, bridge, model = main(epochs=args.epochs, nan_at_batch=args.nan_at_batch)
    skipped = bridge.learn.skip_step_on_bad_gradients.skipped
    # Lightning counts a cancelled step in global_step too.
    taken = trainer.global_step - skipped
    print(f"steps taken: {taken}, steps skipped: {skipped}, resets: {model.resets}")
    print(f"weights finite: {all(torch.isfinite(p).all() for p in model.parameters())}")
