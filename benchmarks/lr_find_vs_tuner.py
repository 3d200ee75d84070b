"""lr_find against Lightning's Tuner.lr_find on one model; the figures of docs/schedules.md.

Both finders sweep 1e-7 -> 10 over 100 steps on scikit-learn's digits (offline) with an MLP whose
`configure_optimizers` returns an AccelOptimizer (Adam). Reported: each suggestion, the
validation accuracy of a 3-epoch `fit_one_cycle` at that learning rate (median of `--repeats`
seeds), and each finder's wall time (median). Run: `python benchmarks/lr_find_vs_tuner.py`.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.tuner import Tuner  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from lightning_accel.module import AccelModule  # noqa: E402
from lightning_accel.optim.recipes import Adam  # noqa: E402
from lightning_accel.schedule import fit_one_cycle, lr_find, minimum, slide, steep, valley  # noqa: E402

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
QUIET = dict(
    logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
)


def digits_loaders(batch_size: int = 64) -> tuple[DataLoader, DataLoader]:
    """Fresh loaders, so every run sees the same batches in the same order."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32) / 16
    y = torch.tensor(y)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, valid = perm[:1500], perm[1500:]
    gen = torch.Generator().manual_seed(1)
    return (
        DataLoader(TensorDataset(x[train], y[train]), batch_size, shuffle=True, generator=gen),
        DataLoader(TensorDataset(x[valid], y[valid]), 256),
    )


class DigitsMLP(pl.LightningModule):
    """A plain LightningModule returning an AccelOptimizer, with the `lr` the Tuner looks for."""

    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.lr = lr
        self.net = torch.nn.Sequential(
            torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return Adam(self.parameters(), lr=self.lr)


def accuracy(model: torch.nn.Module, valid: DataLoader) -> float:
    model.eval()
    with torch.no_grad():
        hits = sum((model(x).argmax(1) == y).sum().item() for x, y in valid)
    return hits / len(valid.dataset)


def ours(plot_path: Path | None = None):
    train, _ = digits_loaders()
    torch.manual_seed(0)
    module = DigitsMLP()
    return lr_find(
        module,
        train_dataloaders=train,
        suggest_funcs=(valley, slide, minimum, steep),
        show_plot=False,
        plot_path=plot_path,
        **QUIET,
    )


def lightning_tuner() -> float:
    train, _ = digits_loaders()
    torch.manual_seed(0)
    module = DigitsMLP()
    trainer = pl.Trainer(**QUIET)
    finder = Tuner(trainer).lr_find(
        module,
        train_dataloaders=train,
        min_lr=1e-7,
        max_lr=10,
        num_training=100,
        update_attr=False,
    )
    return finder.suggestion()


def one_cycle_accuracy(lr: float, seed: int) -> float:
    train, valid = digits_loaders()
    torch.manual_seed(seed)
    net = DigitsMLP().net
    module = AccelModule(net, torch.nn.functional.cross_entropy, opt_func=Adam)
    module.bridge.learn.recorder.print_table = False
    fit_one_cycle(module, 3, lr, train_dataloaders=train, **QUIET)
    return accuracy(net, valid)


def timed(fn, repeats: int) -> tuple[object, float]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def one_cycle_figure() -> None:
    """The 1cycle curves as the package records them, from a real fit_one_cycle."""
    train, _ = digits_loaders()
    torch.manual_seed(0)
    module = AccelModule(DigitsMLP().net, torch.nn.functional.cross_entropy, opt_func=Adam)
    module.bridge.learn.recorder.print_table = False
    fit_one_cycle(module, 3, 3e-3, train_dataloaders=train, **QUIET)
    fig = module.bridge.learn.recorder.plot_sched()
    fig.set_size_inches(10, 4)
    fig.tight_layout()
    fig.savefig(IMAGES / "one_cycle.png", format="png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    IMAGES.mkdir(parents=True, exist_ok=True)
    one_cycle_figure()
    ours(IMAGES / "lr_find.png")
    suggested, ours_s = timed(ours, args.repeats)
    tuner_lr, tuner_s = timed(lightning_tuner, args.repeats)

    rows = [(f"lightning-accel `{name}`", lr) for name, lr in suggested._asdict().items()]
    rows.append(("Lightning `Tuner.lr_find().suggestion()`", tuner_lr))
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, lightning {pl.__version__}; {args.repeats} repeats"
    )
    print("| suggestion | lr | valid accuracy after fit_one_cycle(3, lr) (median) |")
    print("|---|---|---|")
    for name, lr in rows:
        accs = [one_cycle_accuracy(lr, seed) for seed in range(args.repeats)]
        print(f"| {name} | {lr:.2e} | {statistics.median(accs):.3f} |")
    print()
    print("| finder | median wall time (s) | ratio |")
    print("|---|---|---|")
    print(f"| lightning-accel `lr_find` | {ours_s:.2f} | {ours_s / tuner_s:.2f} |")
    print(f"| Lightning `Tuner.lr_find` | {tuner_s:.2f} | 1.00 |")


if __name__ == "__main__":
    main()
