"""Cost of OptimizerStatsMonitor on ResNet-34, against a per-layer grad-norm logger.

The monitor's own hooks are timed inside real Lightning fits (a subclass wraps the methods that do
the work), so the figure is the monitor's cost, not the noise of a shared machine's step times.
Runs, interleaved and repeated:

- ``baseline``: no monitor, for the step time;
- ``logged``: the monitor logging every step (no histograms): the cost of one logged step;
- ``unlogged``: the monitor never logging: the cost of a step it skips;
- ``histograms``: logging and histograms every step: the cost of a histogram step;
- ``grad_norm``: the usual alternative, Lightning's ``grad_norm`` utility (per-parameter norms
  only) written through the same TensorBoardLogger every step.

The overhead at the default intervals (log every 50 steps, histograms every 500) is
``(logged + 49 * unlogged + (histograms - logged) / 10) / 50 / step``.

    python benchmarks/monitor_overhead.py --steps 6 --repeats 3
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections import defaultdict

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import grad_norm
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_accel.module import AccelModule
from lightning_accel.monitor import OptimizerStatsMonitor
from lightning_accel.optim.recipes import Adam
from lightning_accel.vision import vision_model

DEFAULT_EVERY, HIST_FACTOR = 50, 10


class TimedMonitor(OptimizerStatsMonitor):
    """The monitor, with the wall time of its per-step work recorded per step."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seconds: dict[int, float] = defaultdict(float)

    def _before_step(self, trainer, optimizer):
        start = time.perf_counter()
        super()._before_step(trainer, optimizer)
        self._step = trainer.global_step
        self.seconds[self._step] += time.perf_counter() - start

    def _after_step(self):
        start = time.perf_counter()
        super()._after_step()
        self.seconds[self._step] += time.perf_counter() - start


class GradNormLogger(pl.Callback):
    """The common hand-written alternative: per-parameter gradient norms, every `every` steps."""

    def __init__(self, every: int = 1):
        self.every = every
        self.seconds: dict[int, float] = defaultdict(float)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        start = time.perf_counter()
        if (trainer.global_step + 1) % self.every == 0:
            trainer.logger.log_metrics(grad_norm(pl_module, norm_type=2), trainer.global_step)
        self.seconds[trainer.global_step] += time.perf_counter() - start


class StepClock(pl.Callback):
    """Wall time of each training step, from batch start to batch end (after every callback)."""

    def __init__(self):
        self.seconds: dict[int, float] = {}
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def stop(self, trainer):
        self.seconds[trainer.global_step - 1] = time.perf_counter() - self._start


class ClockStop(pl.Callback):
    def __init__(self, clock: StepClock):
        self.clock = clock

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.clock.stop(trainer)


def one_run(config: str, args: argparse.Namespace, logdir: str) -> tuple[list[float], list[float]]:
    """(step seconds, monitor seconds) for each step after the first of one fit."""
    torch.manual_seed(0)
    n = args.batch_size * (args.steps + 1)
    data = TensorDataset(torch.randn(n, 3, args.size, args.size), torch.randint(0, 10, (n,)))
    module = AccelModule(vision_model("resnet34", n_out=10), nn.CrossEntropyLoss(), opt_func=Adam)
    extra: list[pl.Callback] = []
    if config == "logged":
        extra = [TimedMonitor(log_every_n_steps=1, histogram_every_n_steps=0, log_hparams=False)]
    elif config == "unlogged":
        extra = [TimedMonitor(log_every_n_steps=10**9, log_hparams=False)]
    elif config == "histograms":
        extra = [TimedMonitor(log_every_n_steps=1, histogram_every_n_steps=1, log_hparams=False)]
    elif config == "grad_norm":
        extra = [GradNormLogger(every=1)]
    clock = StepClock()
    trainer = pl.Trainer(
        max_steps=args.steps + 1,
        accelerator=args.accelerator,
        devices=1,
        logger=TensorBoardLogger(logdir, name=config),
        callbacks=[clock, *extra, ClockStop(clock)],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, DataLoader(data, batch_size=args.batch_size))
    steps = sorted(clock.seconds)[1:]  # the first step warms up allocators and caches
    monitor = extra[0].seconds if extra else {}
    return [clock.seconds[s] for s in steps], [monitor.get(s, 0.0) for s in steps]


CONFIGS = ("baseline", "logged", "unlogged", "histograms", "grad_norm")


def main(args: argparse.Namespace) -> str:
    torch.set_num_threads(args.threads)
    step_times: dict[str, list[float]] = defaultdict(list)
    costs: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as logdir:
        for _ in range(args.repeats):
            for config in CONFIGS:  # interleaved, so load changes hit every configuration
                steps, monitor = one_run(config, args, logdir)
                step_times[config] += steps
                costs[config] += monitor
    med = {c: statistics.median(costs[c]) for c in CONFIGS if c != "baseline"}
    step = statistics.median(step_times["baseline"])
    amortized = (
        med["logged"]
        + (DEFAULT_EVERY - 1) * med["unlogged"]
        + (med["histograms"] - med["logged"]) / HIST_FACTOR
    ) / DEFAULT_EVERY
    rows = [
        ("training step, no monitor (median)", step, 1.0),
        ("monitor, logged step", med["logged"], med["logged"] / step),
        ("monitor, step it does not log", med["unlogged"], med["unlogged"] / step),
        ("monitor, logged step with histograms", med["histograms"], med["histograms"] / step),
        ("grad_norm logger (alternative), every step", med["grad_norm"], med["grad_norm"] / step),
        (
            f"**monitor at the defaults (every {DEFAULT_EVERY}, histograms every "
            f"{DEFAULT_EVERY * HIST_FACTOR})**",
            amortized,
            amortized / step,
        ),
    ]
    device = torch.cuda.get_device_name() if args.accelerator == "gpu" else platform.processor()
    lines = [
        f"ResNet-34 (21.8M parameters, 114 tensors), AccelOptimizer Adam, batch {args.batch_size} "
        f"at {args.size}x{args.size} px, {args.accelerator} ({device or platform.machine()}, "
        f"{args.threads} torch threads); {args.repeats} interleaved repeats of {args.steps} "
        "measured steps each; medians.",
        "",
        "| measured | seconds | ratio to the step |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {sec:.6f} | {ratio:.4%} |" for name, sec, ratio in rows]
    logged_ms, grad_norm_ms = med["logged"] * 1e3, med["grad_norm"] * 1e3
    lines += [
        "",
        f"Logged step: monitor {logged_ms:.1f} ms against {grad_norm_ms:.1f} ms for per-parameter "
        f"grad norms alone (ratio {med['logged'] / med['grad_norm']:.2f}).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="measured steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--accelerator", default="cpu")
    print(main(parser.parse_args()))
