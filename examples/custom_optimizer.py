"""Use 3: a new optimizer from the chapter's stat and step callbacks, watched in TensorBoard.

The chapter ends by suggesting you implement a recent optimizer in its callback framework. Lion
(Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms") takes one line of state and
two of step:

    c = mom * m + (1 - mom) * g          # interpolate momentum and gradient
    w = w - lr * (sign(c) + wd * w)      # every weight moves by exactly lr (plus decay)
    m = mom2 * m + (1 - mom2) * g        # momentum, with a second, slower coefficient

Below it is one step callback plus the package's decoupled `weight_decay`, trained with the
chapter's 1cycle schedule (which anneals `lr` and `mom` alike) and watched by
`OptimizerStatsMonitor`: its `update/<layer>` histograms show every weight moving by +-lr, and the
`mom2` hyper-parameter Lion declares shows up as a curve without any extra code. RAdam, the
chapter's other suggestion, is assembled from the package's callbacks for comparison.

    python examples/custom_optimizer.py --optimizer lion --epochs 5
    tensorboard --logdir runs/custom_optimizer
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_accel import (
    AccelModule,
    AccelOptimizer,
    OptimizerStatsMonitor,
    average_grad,
    average_sqr_grad,
    fit_one_cycle,
    radam_step,
    step_stat,
    weight_decay,
)


def lion_step(p: Tensor, lr: float, mom: float, mom2: float, grad_avg=None, **kwargs) -> dict:
    """Lion's step: move by the sign of the momentum/gradient blend, then update the momentum."""
    if grad_avg is None:
        grad_avg = torch.zeros_like(p.grad)
    p.data.add_(grad_avg.lerp(p.grad, 1 - mom).sign_(), alpha=-lr)
    grad_avg.lerp_(p.grad, 1 - mom2)
    return {"grad_avg": grad_avg}


lion_step.defaults = dict(mom=0.9, mom2=0.99)


class Lion(AccelOptimizer):
    """Lion as an AccelOptimizer: decoupled weight decay, then Lion's step."""

    def __init__(self, params, lr: float, mom: float = 0.9, mom2: float = 0.99, wd: float = 0.0):
        super().__init__(params, [weight_decay, lion_step], lr=lr, mom=mom, mom2=mom2, wd=wd)


class RAdam(AccelOptimizer):
    """RAdam from the package's callbacks: Adam's averages and step count, RAdam's step."""

    def __init__(self, params, lr: float, mom: float = 0.9, sqr_mom: float = 0.99, wd: float = 0.0):
        cbs = [weight_decay, partial(average_grad, dampening=True), average_sqr_grad, step_stat]
        super().__init__(params, [*cbs, radam_step], lr=lr, mom=mom, sqr_mom=sqr_mom, wd=wd)


OPTIMIZERS = {"lion": (Lion, 1e-2), "radam": (RAdam, 3e-2)}


def digits_loaders(batch_size: int) -> tuple[DataLoader, DataLoader]:
    """scikit-learn's 8x8 digits (offline), scaled to [0, 1], split 80/20 with a fixed seed."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, valid = order[: int(0.8 * len(x))], order[int(0.8 * len(x)) :]
    return (
        DataLoader(TensorDataset(x[train], y[train]), batch_size=batch_size, shuffle=True),
        DataLoader(TensorDataset(x[valid], y[valid]), batch_size=batch_size),
    )


def main(
    optimizer: str = "lion",
    epochs: int = 5,
    lr: float | None = None,
    batch_size: int = 64,
    limit_batches: int | None = None,
    log_every_n_steps: int = 5,
    root_dir: str | Path = "runs/custom_optimizer",
    progress_bar: bool = True,
) -> pl.Trainer:
    """Train an MLP on digits with `optimizer` under fit_one_cycle, logging to TensorBoard."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    opt_func, default_lr = OPTIMIZERS[optimizer]
    pl.seed_everything(0, verbose=False)
    train, valid = digits_loaders(batch_size)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    module = AccelModule(model, nn.CrossEntropyLoss(), opt_func=opt_func, lr=lr or default_lr)
    monitor = OptimizerStatsMonitor(hparams={"optimizer_name": optimizer})
    return fit_one_cycle(
        module,
        epochs,
        lr or default_lr,
        cbs=[monitor],
        train_dataloaders=train,
        val_dataloaders=valid,
        default_root_dir=root_dir,
        logger=TensorBoardLogger(root_dir, name=optimizer),
        log_every_n_steps=log_every_n_steps,
        limit_train_batches=limit_batches,
        limit_val_batches=limit_batches,
        enable_checkpointing=False,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="lion")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=None)
    args = parser.parse_args()
    trainer = main(optimizer=args.optimizer, epochs=args.epochs, lr=args.lr)
    metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items()}
    print(f"{args.optimizer}: {metrics}; TensorBoard logs in {trainer.logger.log_dir}")
