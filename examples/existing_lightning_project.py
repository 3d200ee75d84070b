"""Use 1: a typical Lightning project, with this package's optimizer.

Everything here is ordinary Lightning: a LightningModule, LearningRateMonitor, ModelCheckpoint, a
torch OneCycleLR scheduler. Two lines differ from the all-torch version, marked `# lightning-accel`:
the import and the line that builds the optimizer. The scheduler, the monitors and checkpointing
work unchanged because the optimizer is a real `torch.optim.Optimizer` (OneCycleLR cycles its
momentum through torch's `betas` key, which the optimizer mirrors into its own `mom`).

    python examples/existing_lightning_project.py --epochs 5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_accel import Adam  # lightning-accel: the import


class DigitsClassifier(pl.LightningModule):
    """A small MLP on scikit-learn's 8x8 digits; nothing here is specific to lightning-accel."""

    def __init__(self, lr: float = 3e-3, total_steps: int = 100) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        # lightning-accel: was `torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)`.
        opt = Adam(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.hparams.lr, total_steps=self.hparams.total_steps
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def digits_loaders(batch_size: int) -> tuple[DataLoader, DataLoader]:
    """scikit-learn's digits (offline), scaled to [0, 1], split 80/20 with a fixed seed."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(x))
    train, valid = order[:cut], order[cut:]
    return (
        DataLoader(TensorDataset(x[train], y[train]), batch_size=batch_size, shuffle=True),
        DataLoader(TensorDataset(x[valid], y[valid]), batch_size=batch_size),
    )


def main(
    epochs: int = 5,
    lr: float = 3e-3,
    batch_size: int = 64,
    limit_batches: int | None = None,
    root_dir: str | Path = "runs/existing_lightning_project",
    progress_bar: bool = True,
) -> pl.Trainer:
    """Train, checkpoint the best model by validation accuracy, and return the trainer."""
    pl.seed_everything(0, verbose=False)
    train, valid = digits_loaders(batch_size)
    steps_per_epoch = len(train) if limit_batches is None else min(limit_batches, len(train))
    model = DigitsClassifier(lr=lr, total_steps=epochs * steps_per_epoch)
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=root_dir,
        logger=TensorBoardLogger(root_dir, name="tb"),
        callbacks=[
            LearningRateMonitor(logging_interval="step", log_momentum=True),
            ModelCheckpoint(monitor="val_acc", mode="max"),
        ],
        limit_train_batches=limit_batches,
        limit_val_batches=limit_batches,
        log_every_n_steps=1 if limit_batches else 10,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
    )
    trainer.fit(model, train, valid)
    return trainer


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--limit-batches", type=int, default=None)
    args = parser.parse_args()
    result = main(epochs=args.epochs, lr=args.lr, limit_batches=args.limit_batches)
    print(f"val_acc={float(result.callback_metrics['val_acc']):.3f}")
    print(f"best checkpoint: {result.checkpoint_callback.best_model_path}")
