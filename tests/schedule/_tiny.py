"""Tiny Lightning pieces shared by the training-recipe tests."""

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


def loader(n_batches=5, batch_size=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_batches * batch_size, 3, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=batch_size)


def momentum_sgd(module):
    return torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)


class TinyModule(pl.LightningModule):
    """Linear regression; `make_opt(module)` builds the optimizer (torch SGD by default)."""

    def __init__(self, make_opt=None, n_batches=5, scheduler=None):
        super().__init__()
        self.body = torch.nn.Linear(3, 4)
        self.head = torch.nn.Linear(4, 1)
        self.make_opt = make_opt or momentum_sgd
        self.n_batches = n_batches
        self.scheduler = scheduler

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        opt = self.make_opt(self)
        if self.scheduler is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": self.scheduler(opt)}

    def train_dataloader(self):
        return loader(self.n_batches)


class StepProbe(pl.Callback):
    """Reads what the optimizer holds right before each optimizer step, via torch's own keys."""

    def __init__(self):
        self.lrs, self.moms, self.wds = [], [], []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append([g["lr"] for g in optimizer.param_groups])
        self.moms.append([_mom(g) for g in optimizer.param_groups])
        self.wds.append([g.get("wd", g.get("weight_decay")) for g in optimizer.param_groups])


def _mom(group):
    if "momentum" in group:
        return group["momentum"]
    return group["betas"][0] if "betas" in group else None
