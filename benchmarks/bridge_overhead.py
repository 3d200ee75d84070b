"""Per-batch cost of the callback bridge: AccelModule + bridge + six callbacks vs plain Lightning.

A small MLP (784-256-256-10, batch 64) trains for one epoch of `--batches` batches, on one
thread, in ways sharing one torch.optim.Adam setup: a plain LightningModule in a plain Trainer;
an AccelModule whose bridge runs TrainEval and Recorder only, and with six more callbacks that
define every event; and a hand-written PyTorch loop. Each batch is timed from one batch start
to the next, in wall time and in process CPU time (the CPU time is the steadier figure on a shared,
loaded machine: other processes' load barely enters it); the per-run figure is the median
batch. Runs are interleaved and repeated `--repeats` times; the table gives the medians, their
ratios to plain Lightning, and the spread of the per-repeat CPU ratios (each variant against the
plain Lightning run of the same repeat: min to max).
Run: `python benchmarks/bridge_overhead.py`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_accel import AccelModule, Callback
from lightning_accel.loop.events import EVENTS

BS = 64


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))  # fmt: skip


def data(n_batches: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_batches * BS, 784, generator=g)
    y = torch.randint(0, 10, (n_batches * BS,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=BS)


class EveryEvent(Callback):
    """Defines every event with a trivial body: the dispatch cost, not the callback's work."""

    def __init__(self) -> None:
        self.calls = 0


def _count(self: EveryEvent) -> None:
    self.calls += 1


for _event in EVENTS:
    if _event != "after_create":
        setattr(EveryEvent, _event, _count)


class Plain(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = mlp()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class BatchClock(pl.Callback):
    """Time between consecutive batch starts: the whole per-batch cost, hooks included."""

    def __init__(self) -> None:
        self.stamps: list[tuple[float, float]] = []

    def on_train_batch_start(self, *args) -> None:
        self.stamps.append(_now())

    def on_train_epoch_end(self, *args) -> None:
        self.stamps.append(_now())


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _medians(stamps: list[tuple[float, float]], skip: int = 5) -> tuple[float, float]:
    pairs = list(zip(stamps, stamps[1:]))[skip:]
    wall = statistics.median(b[0] - a[0] for a, b in pairs)
    cpu = statistics.median(b[1] - a[1] for a, b in pairs)
    return wall, cpu


def run_lightning(module: pl.LightningModule, dl: DataLoader) -> tuple[float, float]:
    clock = BatchClock()
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
        num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, dl)
    return _medians(clock.stamps)


def plain_lightning(dl: DataLoader) -> tuple[float, float]:
    return run_lightning(Plain(), dl)


def accel_bridge(dl: DataLoader, n_callbacks: int = 6) -> tuple[float, float]:
    module = AccelModule(
        mlp(), nn.functional.cross_entropy, opt_func=torch.optim.Adam, lr=1e-3,
        cbs=[EveryEvent() for _ in range(n_callbacks)],
    )  # fmt: skip
    module.recorder.print_table = False
    return run_lightning(module, dl)


def accel_bridge_defaults(dl: DataLoader) -> tuple[float, float]:
    return accel_bridge(dl, n_callbacks=0)


def hand_loop(dl: DataLoader) -> tuple[float, float]:
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    stamps = []
    for x, y in dl:
        stamps.append(_now())
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    stamps.append(_now())
    return _medians(stamps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    dl = data(args.batches)
    variants = {
        "plain Lightning Trainer": plain_lightning,
        "AccelModule + bridge (TrainEval, Recorder)": accel_bridge_defaults,
        "AccelModule + bridge + 6 callbacks": accel_bridge,
        "hand-written PyTorch loop": hand_loop,
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():  # interleaved, so load drifts hit every variant
            times[name].append(fn(dl))
    med = {
        name: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
        for name, v in times.items()
    }
    base_wall, base_cpu = med["plain Lightning Trainer"]
    plain_runs = times["plain Lightning Trainer"]
    spread = {
        name: sorted(c / p_c for (_, c), (_, p_c) in zip(v, plain_runs))
        for name, v in times.items()
    }
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"1 thread; {args.batches} batches of {BS}, median of {args.repeats} interleaved runs"
    )
    print(
        "| loop | CPU ms / batch | CPU ratio | per-repeat CPU ratios | wall ms / batch "
        "| wall ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, (wall, cpu) in med.items():
        low, high = spread[name][0], spread[name][-1]
        print(
            f"| {name} | {cpu * 1e3:.3f} | {cpu / base_cpu:.3f} | {low:.3f} to {high:.3f} | "
            f"{wall * 1e3:.3f} | {wall / base_wall:.3f} |"
        )


if __name__ == "__main__":
    main()
