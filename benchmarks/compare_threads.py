"""Wall time of `lightning-accel compare` by torch thread count, alone and beside a busy process.

On a small CPU a second process that keeps one core busy can make a multi-threaded torch job
several times slower (its threads wait for each other at every parallel region while one of them
is descheduled). This runs the same short comparison with each `--threads` value, once alone
and once beside `python -c "while True: pass"`, interleaved round by round, and reports medians
and their ratio to the fastest quiet configuration.

    python benchmarks/compare_threads.py --threads 1 2 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

BUSY = [sys.executable, "-c", "while True: pass"]


def run_compare(threads: int, compare_args: list[str], logdir: Path) -> tuple[float, float]:
    """Wall and CPU seconds (the child's, all its threads) of one `compare` in a fresh process."""
    cmd = [sys.executable, "-m", "lightning_accel", "compare", "--threads", str(threads)]
    cmd += [*compare_args, "--no-progress-bar", "--logdir", str(logdir)]
    before = os.times()
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--compare-args",
        default="--recipes adam --epochs 2 --no-lr-find",
        help="what each run compares (default: one recipe, 2 epochs of digits)",
    )
    args = parser.parse_args()
    compare_args = args.compare_args.split()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}; compare {' '.join(compare_args)}"
    )
    walls: dict[tuple[int, bool], list[float]] = {}
    cpus: dict[tuple[int, bool], list[float]] = {}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        n = 0
        for rep in range(args.repeats):
            for busy in (False, True):
                for threads in args.threads:
                    loads.append(os.getloadavg()[0])
                    hog = subprocess.Popen(BUSY) if busy else None
                    try:
                        n += 1
                        wall, cpu = run_compare(threads, compare_args, Path(tmp) / f"run{n}")
                    finally:
                        if hog is not None:
                            hog.kill()
                            hog.wait()
                    walls.setdefault((threads, busy), []).append(wall)
                    cpus.setdefault((threads, busy), []).append(cpu)
                    print(
                        f"  round {rep + 1}: threads {threads}, "
                        f"{'beside a busy process' if busy else 'alone'}: wall {wall:.1f} s, "
                        f"cpu {cpu:.1f} s (load average {loads[-1]:.1f})",
                        flush=True,
                    )
    best_quiet = min(statistics.median(walls[(t, False)]) for t in args.threads)
    print(f"\nload average before the runs: {min(loads):.1f} to {max(loads):.1f}")
    print("| threads | busy process | median wall s | median CPU s | × fastest alone |")
    print("|---:|---|---:|---:|---:|")
    for threads in args.threads:
        for busy in (False, True):
            wall = statistics.median(walls[(threads, busy)])
            cpu = statistics.median(cpus[(threads, busy)])
            print(
                f"| {threads} | {'yes' if busy else 'no'} | {wall:.1f} | {cpu:.1f} | "
                f"{wall / best_quiet:.2f} |"
            )


if __name__ == "__main__":
    main()
