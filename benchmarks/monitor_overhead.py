"""Cost of OptimizerStatsMonitor at its defaults on the default compare's configuration.

The stand-in for one recipe of `lightning-accel compare` (its defaults: ResNet-34 from scratch on
the digits at 32 px, batch 64, 3 epochs = 66 optimizer steps, 1 torch thread on a 2-core
machine): the chapter's Adam with fit_one_cycle, which keeps both running averages and so costs
the monitor the most. Two configurations, interleaved and repeated in the same process:

- ``none``: the same training without the monitor;
- ``monitor``: `OptimizerStatsMonitor()` at its defaults (hyper-parameters every step, per-layer
  statistics at 50 steps, histograms at 12, the first and last step included).

The monitor's own work is timed inside the fit (a subclass wraps the methods that do it), so its
cost does not drown in the noise of a shared machine's step times; whole fits are timed too.
Reported: the monitor's seconds per run over the training steps' seconds of the run without it
(medians over repeats), split into statistics, histogram and other steps.

    python benchmarks/monitor_overhead.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections import defaultdict

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from lightning_accel.module import AccelModule
from lightning_accel.monitor import OptimizerStatsMonitor
from lightning_accel.optim.recipes import Adam
from lightning_accel.schedule.fit import fit_one_cycle
from lightning_accel.vision.digits import DigitsDataModule
from lightning_accel.vision.models import vision_model, vision_splitter


class TimedMonitor(OptimizerStatsMonitor):
    """The monitor, with the wall time of its per-step work recorded per step."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seconds: dict[int, float] = defaultdict(float)
        self._step = 0

    def _before_step(self, trainer, optimizer):
        start = time.perf_counter()
        self._step = trainer.global_step
        super()._before_step(trainer, optimizer)
        self.seconds[self._step] += time.perf_counter() - start

    def _after_step(self):
        start = time.perf_counter()
        super()._after_step()
        self.seconds[self._step] += time.perf_counter() - start


class StepClock(pl.Callback):
    """Wall time of each training step, from batch start to batch end (after every callback)."""

    def __init__(self):
        self.seconds: dict[int, float] = {}
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seconds[trainer.global_step - 1] = time.perf_counter() - self._start


def one_run(config: str, args: argparse.Namespace, logdir: str) -> dict:
    pl.seed_everything(0, verbose=False)
    data = DigitsDataModule(size=args.size, batch_size=args.batch_size, seed=0)
    model = vision_model(args.arch, n_out=10)
    module = AccelModule(model, nn.CrossEntropyLoss(), opt_func=Adam, splitter=vision_splitter)
    recorder = module.recorder
    if recorder is not None:
        recorder.print_table = False
    clock = StepClock()
    monitor = TimedMonitor(log_hparams=False) if config == "monitor" else None
    start = time.perf_counter()
    fit_one_cycle(
        module,
        args.epochs,
        3e-3,
        datamodule=data,
        cbs=[monitor] if monitor else [],
        callbacks=[clock],
        accelerator="cpu",
        logger=TensorBoardLogger(logdir, name=config),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    out = {"wall": time.perf_counter() - start, "steps": clock.seconds}
    if monitor is not None:
        out["monitor"] = dict(monitor.seconds)
        out["stats_steps"] = monitor.stats_cadence.count(len(clock.seconds))
        out["hist_steps"] = sorted(s for s in clock.seconds if s in monitor.histogram_cadence)
        out["stats_or_hist"] = sorted(
            s for s in clock.seconds if s in monitor.stats_cadence or s in monitor.histogram_cadence
        )
    return out


def main(args: argparse.Namespace) -> str:
    torch.set_num_threads(args.threads)
    runs: dict[str, list[dict]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as logdir:
        for _ in range(args.repeats):
            for config in ("none", "monitor"):  # interleaved: load changes hit both
                runs[config].append(one_run(config, args, logdir))
    steps_none = [sum(r["steps"].values()) for r in runs["none"]]
    mon = runs["monitor"]
    total = [sum(r["monitor"].values()) for r in mon]
    hist_steps, logged = set(mon[0]["hist_steps"]), set(mon[0]["stats_or_hist"])
    n_steps = len(mon[0]["steps"])

    def per_step(select) -> float:
        return statistics.median(v for r in mon for s, v in r["monitor"].items() if select(s))

    step = statistics.median(v for r in runs["none"] for v in r["steps"].values())
    stats_step = per_step(lambda s: s in logged and s not in hist_steps)
    hist_step = per_step(lambda s: s in hist_steps)
    other_step = per_step(lambda s: s not in logged) if n_steps > len(logged) else 0.0
    ratio = statistics.median(t / s for t, s in zip(total, steps_none))
    wall_none = statistics.median(r["wall"] for r in runs["none"])
    wall_mon = statistics.median(r["wall"] for r in mon)
    load = os.getloadavg()
    cpu = platform.processor() or platform.machine()
    lines = [
        f"{args.arch}, Adam + fit_one_cycle, digits at {args.size} px, batch {args.batch_size}, "
        f"{args.epochs} epochs = {n_steps} optimizer steps, cpu ({cpu}, "
        f"{os.cpu_count()} CPUs, {args.threads} torch threads); "
        f"{args.repeats} interleaved repeats; medians. Load average at the end: "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}.",
        f"Monitor at its defaults: statistics at {len(logged)} of {n_steps} steps "
        f"({mon[0]['stats_steps']} spread + the histogram steps), histograms at "
        f"{len(hist_steps)} ({sorted(hist_steps)}), hyper-parameters at all {n_steps}.",
        "",
        "| measured | seconds | ratio to a training step |",
        "| --- | ---: | ---: |",
        f"| training step, no monitor | {step:.4f} | 100 % |",
        f"| monitor, statistics step | {stats_step:.4f} | {stats_step / step:.1%} |",
        f"| monitor, statistics + histograms step | {hist_step:.4f} | {hist_step / step:.1%} |",
        f"| monitor, hyper-parameters-only step | {other_step:.6f} | {other_step / step:.3%} |",
        f"| **monitor per run / training steps per run** | {statistics.median(total):.2f} / "
        f"{statistics.median(steps_none):.2f} | **{ratio:.1%}** |",
        "",
        f"Whole fits (training, validation, set-up): {wall_none:.1f} s without the monitor, "
        f"{wall_mon:.1f} s with it (ratio {wall_mon / wall_none:.3f}).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--arch", default="resnet34")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    print(main(parser.parse_args()))
