"""DDP scenarios for test_ddp.py, run as `torchrun --nproc_per_node=2 -m MODULE OUT`.

MODULE is `tests.lightning.ddp_scenarios`. Each scenario raises a Cancel exception on one rank
only; every rank writes its event sequence and final parameters to OUT/<scenario>-rank<r>.json.
At the end each rank destroys its process group and writes the gloo / TCPStore threads still
alive to OUT/exit-rank<r>.json.
"""

from __future__ import annotations

import json
import sys
import warnings

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_accel import AccelModule, CallbackBridge
from lightning_accel.optim.recipes import SGD

from ..distributed import release_process_group
from ..loop.reference import CANCELS, EventLog
from ..tiny import PlainModule

N_EPOCH, N_TRAIN, N_VALID, BS, LR = 2, 3, 2, 4, 0.1

# name -> (raising rank, cancel kind, event, occurrence, accumulate_grad_batches)
SCENARIOS = {
    "none": (0, None, None, 0, 1),
    "batch-after_backward": (0, "batch", "after_backward", 1, 1),
    "batch-before_batch": (1, "batch", "before_batch", 2, 1),
    "backward-before_backward": (0, "backward", "before_backward", 1, 1),
    "step-before_step": (1, "step", "before_step", 1, 1),
    "train-after_loss": (0, "train", "after_loss", 1, 1),
    "validate-after_pred": (1, "validate", "after_pred", 3, 1),
    "epoch-before_epoch": (0, "epoch", "before_epoch", 1, 1),
    "epoch-after_train": (1, "epoch", "after_train", 0, 1),
    "fit-after_batch": (1, "fit", "after_batch", 4, 1),
    "fit-after_validate": (0, "fit", "after_validate", 0, 1),
    "batch-after_backward-acc2": (0, "batch", "after_backward", 0, 2),
    "step-before_step-acc2": (1, "step", "before_step", 0, 2),
    # A plain LightningModule with the bridge in the Trainer's callbacks.
    "plain-batch-before_batch": (1, "batch", "before_batch", 2, 1),
    "plain-train-after_backward": (0, "train", "after_backward", 1, 1),
}
PLAIN = {name for name in SCENARIOS if name.startswith("plain-")}


def data() -> tuple[TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(0)
    n_train, n_valid = 2 * N_TRAIN * BS, 2 * N_VALID * BS
    x = torch.randn(n_train + n_valid, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(len(x), 1, generator=g)
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])


def run(name: str, out: str) -> None:
    rank_raising, kind, when, at, accumulate = SCENARIOS[name]
    train, valid = data()
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    log = EventLog()
    if name in PLAIN:
        module: pl.LightningModule = PlainModule(model=model, lr=LR)
        callbacks = [CallbackBridge(log)]
    else:
        module = AccelModule(model, nn.functional.mse_loss, opt_func=SGD, lr=LR, cbs=[log])
        callbacks = []
    trainer = pl.Trainer(
        callbacks=callbacks,
        max_epochs=N_EPOCH,
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(process_group_backend="gloo"),
        accumulate_grad_batches=accumulate,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        num_sanity_val_steps=1,
        default_root_dir=out,
    )
    rank = trainer.global_rank
    if kind and rank == rank_raising:
        log.arm(CANCELS[kind], when, at)
    log.learn.recorder.print_table = False
    trainer.fit(module, DataLoader(train, batch_size=BS), DataLoader(valid, batch_size=BS))
    result = {
        "seq": log.seq,
        "params": [p.detach().tolist() for p in module.model.parameters()],
        "rank": rank,
    }
    with open(f"{out}/{name}-rank{rank}.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    for scenario in sys.argv[2:] or SCENARIOS:
        run(scenario, sys.argv[1])
    rank = torch.distributed.get_rank()
    with open(f"{sys.argv[1]}/exit-rank{rank}.json", "w") as f:
        json.dump({"c10d_threads": release_process_group()}, f)
