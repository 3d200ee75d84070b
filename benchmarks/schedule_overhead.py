"""Per-step cost of setting 1cycle lr and momentum: our schedule engine against torch's OneCycleLR.

Both drive the same torch.optim.SGD (momentum) and AccelOptimizer SGD over a 1000-step cycle,
outside any training loop, so only the scheduling cost is timed. Medians of `--repeats` runs;
the ratio is ours / OneCycleLR. Run: `python benchmarks/schedule_overhead.py`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from types import SimpleNamespace

import torch

from lightning_accel.optim.recipes import SGD
from lightning_accel.schedule.hyper_scheduling import HyperScheduling
from lightning_accel.schedule.policies import OneCyclePolicy

STEPS = 1000


def params(n_groups: int) -> list[dict]:
    return [{"params": [torch.nn.Parameter(torch.zeros(4))]} for _ in range(n_groups)]


def ours(opt) -> float:
    sched = HyperScheduling(OneCyclePolicy(lr_max=0.1), owner="bench")
    trainer = SimpleNamespace(global_step=0, estimated_stepping_batches=STEPS)
    sched.start(opt)
    start = time.perf_counter()
    for k in range(STEPS):
        trainer.global_step = k
        sched.apply(trainer, opt)
        sched.record(opt)
    return (time.perf_counter() - start) / STEPS


def torch_one_cycle(opt) -> float:
    # OneCycleLR also cycles momentum by default; its final lr differs (timing only).
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=STEPS + 1)
    start = time.perf_counter()
    for _ in range(STEPS):
        sched.step()
    return (time.perf_counter() - start) / STEPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    # No optimizer.step() here on purpose: only the schedulers are timed.
    warnings.filterwarnings("ignore", message="Detected call of")
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
        f"median of {args.repeats} runs of {STEPS} steps"
    )
    print("| optimizer | groups | ours (us/step) | OneCycleLR (us/step) | ratio |")
    print("|---|---|---|---|---|")
    for n_groups in (1, 4):
        for name, make in (
            ("torch.optim.SGD", lambda g: torch.optim.SGD(params(g), lr=0.1, momentum=0.9)),
            ("AccelOptimizer SGD", lambda g: SGD(params(g), lr=0.1, mom=0.9)),
        ):
            a = statistics.median(ours(make(n_groups)) for _ in range(args.repeats))
            b = statistics.median(torch_one_cycle(make(n_groups)) for _ in range(args.repeats))
            print(f"| {name} | {n_groups} | {a * 1e6:.1f} | {b * 1e6:.1f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
