"""Tiny models, data and quiet Trainers shared by the test suites, and the published formulas.

Everything here is small enough that a real `Trainer.fit` takes well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

BS = 4
WEIGHTS = torch.tensor([[1.0], [-2.0], [0.5]])


def regression(n: int, seed: int = 0) -> TensorDataset:
    """`n` samples of a noisy linear-regression problem with three inputs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ WEIGHTS + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def loaders(
    n_train: int, n_valid: int, seed: int = 0, loader: Callable[..., Any] = DataLoader
) -> tuple[Any, Any]:
    """`n_train` training and `n_valid` validation batches of `BS` (None when `n_valid` is 0).

    `loader` builds each loader from a dataset and `batch_size` (torchdata's
    `StatefulDataLoader` for exact resumes).
    """
    data = regression((n_train + n_valid) * BS, seed)
    x, y = data.tensors
    cut = n_train * BS
    train = loader(TensorDataset(x[:cut], y[:cut]), batch_size=BS)
    valid = loader(TensorDataset(x[cut:], y[cut:]), batch_size=BS) if n_valid else None
    return train, valid


def quiet(tmp_path: Any, **overrides: Any) -> dict[str, Any]:
    """Trainer arguments for tests: CPU, no logger, no progress bar, no checkpoints."""
    args = dict(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    args.update(overrides)
    return args


def trainer(tmp_path: Any, **overrides: Any) -> pl.Trainer:
    """A quiet `Trainer` (see `quiet`)."""
    return pl.Trainer(**quiet(tmp_path, **overrides))


class PlainModule(pl.LightningModule):
    """A LightningModule of its own (no AccelModule): linear regression (or `model`), MSE,
    `opt(params)` (torch SGD at `lr` by default)."""

    def __init__(
        self,
        opt: Callable[..., torch.optim.Optimizer] | None = None,
        lr: float = 0.1,
        model: nn.Module | None = None,
    ):
        super().__init__()
        self.model = nn.Linear(3, 1) if model is None else model
        self.make_opt = opt or (lambda params: torch.optim.SGD(params, lr=lr))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return nn.functional.mse_loss(self.model(batch[0]), batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return nn.functional.mse_loss(self.model(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_opt(self.parameters())


def cos(a: float, b: float, x: float) -> float:
    """The published cosine annealing from `a` to `b` at `x` in [0, 1]."""
    return a + (1 + math.cos(math.pi * (1 - x))) * (b - a) / 2


def one_cycle(
    p: float,
    lr_max: float,
    div: float = 25.0,
    div_final: float = 1e5,
    pct_start: float = 0.25,
    moms: tuple[float, float, float] = (0.95, 0.85, 0.95),
) -> tuple[float, float]:
    """(lr, mom) of the published 1cycle policy at position `p`, in float64."""
    if p < pct_start:
        x = p / pct_start
        return cos(lr_max / div, lr_max, x), cos(moms[0], moms[1], x)
    x = (p - pct_start) / (1 - pct_start)
    return cos(lr_max, lr_max / div_final, x), cos(moms[1], moms[2], x)
