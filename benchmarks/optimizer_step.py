"""Time one optimizer step over ResNet-34's parameters: lightning-accel's impls against torch.optim.

For Adam (decoupled weight decay), SGD with momentum, RMSProp and LAMB, every implementation
steps the same 110 parameter tensors (21.8 M values) with fixed random gradients. Measurements are
interleaved (one step of each implementation per round, many rounds) so that load from other
processes hits all of them alike; the table reports medians and ratios, and is written into the
optimizer section of docs/benchmarks.md.

    python benchmarks/optimizer_step.py              # CPU (or --device cuda), writes the docs
    python benchmarks/optimizer_step.py --rounds 5 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

from lightning_accel.optim import recipes

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "## Optimizer step (`benchmarks/optimizer_step.py`)"
IMPLS = ("per_param", "auto", "compiled")
# Targets from issue 2 §5: (our impl, torch reference, maximum ratio of times).
TARGETS = {
    "cpu": [("auto", "torch default", 1.0), ("compiled", "torch fused", 1.5)],
    "cuda": [("auto", "torch foreach", 1.1), ("compiled", "torch fused", 1.3)],
}
MIN_SPEEDUP_OVER_PER_PARAM = 4.0


def torch_candidates(family: str) -> dict[str, Callable]:
    """torch.optim's equivalents of a recipe: default, foreach and fused where torch has them."""
    if family == "Adam":
        make = lambda ps, **kw: torch.optim.AdamW(  # noqa: E731
            ps, lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01, **kw
        )
    elif family == "SGD (mom=0.9)":
        make = lambda ps, **kw: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, **kw)  # noqa: E731
    elif family == "RMSProp":
        make = lambda ps, **kw: torch.optim.RMSprop(ps, lr=1e-3, alpha=0.99, **kw)  # noqa: E731
    else:
        return {}  # torch.optim has no LAMB
    out = {
        "torch default": lambda ps: make(ps),
        "torch foreach": lambda ps: make(ps, foreach=True),
    }
    if family != "RMSProp":  # torch's RMSprop has no fused kernel
        out["torch fused"] = lambda ps: make(ps, fused=True)
    return out


def ours(family: str, impl: str) -> Callable:
    if family == "Adam":
        return lambda ps: recipes.Adam(ps, lr=1e-3, mom=0.9, sqr_mom=0.99, wd=0.01, impl=impl)
    if family == "SGD (mom=0.9)":
        return lambda ps: recipes.SGD(ps, lr=1e-3, mom=0.9, impl=impl)
    if family == "RMSProp":
        return lambda ps: recipes.RMSProp(ps, lr=1e-3, sqr_mom=0.99, impl=impl)
    return lambda ps: recipes.Lamb(ps, lr=1e-3, impl=impl)


def resnet34_params(device: torch.device) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    model = torchvision.models.resnet34()  # random weights: no download
    params = []
    for p in model.parameters():
        q = torch.nn.Parameter(p.detach().to(device))
        q.grad = (torch.randn(p.shape, generator=gen) * 1e-2).to(device)
        params.append(q)
    return params


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_family(family: str, params, device, rounds: int, impls) -> tuple[dict, dict, dict]:
    """Median CPU time and wall time (s) of a step of each implementation, and warm-up times.

    CPU time (all threads of this process) is what the ratios use: on a machine shared with
    other jobs it leaves out the time this process waits for a core, which wall time does not.
    """
    makers = {f"accel {impl}": ours(family, impl) for impl in impls}
    makers.update(torch_candidates(family))
    opts, warmup = {}, {}
    for name, make in makers.items():
        t0 = time.perf_counter()
        opt = make(params)
        for _ in range(3):  # state creation, then (compiled) tracing and code generation
            opt.step()
        synchronize(device)
        warmup[name] = time.perf_counter() - t0
        opts[name] = opt
        print(f"  {family:14s} {name:16s} warm-up {warmup[name]:7.1f} s", flush=True)
    cpu: dict[str, list[float]] = {name: [] for name in opts}
    wall: dict[str, list[float]] = {name: [] for name in opts}
    for _ in range(rounds):
        for name, opt in opts.items():
            synchronize(device)
            c0, w0 = time.process_time(), time.perf_counter()
            opt.step()
            synchronize(device)
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    del opts
    median = lambda d: {k: statistics.median(v) for k, v in d.items()}  # noqa: E731
    return median(cpu), median(wall), warmup


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = platform.processor() or "unknown CPU"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    what = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return (
        f"{what}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op threads), Python {platform.python_version()}"
    )


def _verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def _times(t: float, reference: float | None) -> str:
    return f"{t / reference:.2f}" if reference else "–"


def render(
    results: dict,
    walls: dict,
    warmups: dict,
    device: torch.device,
    rounds: int,
    load: tuple,
    cold: bool = False,
) -> str:
    """The docs section; `results` holds the medians the ratios use (CPU time on CPU, wall time
    on CUDA), `walls` the wall-clock medians."""
    clock = "CPU time" if device.type == "cpu" else "wall time"
    lines = [
        SECTION,
        "",
        f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine(device)}. "
        "One step over torchvision ResNet-34's parameters (110 tensors, 21.8 M values) with "
        f"fixed random gradients; medians of {rounds} interleaved rounds (one step of every "
        "implementation per round). The machine was shared with other jobs (load average "
        f"{load[0]:.1f} at the start, {load[1]:.1f} at the end), so the ratios use the {clock} "
        "of each step, which leaves out the time spent waiting for a core; wall-clock medians "
        "are shown for completeness. Read the ratios, not the milliseconds.",
        "",
        f"| optimizer | implementation | {clock} ms | wall ms | × torch default | × torch fused "
        "| speed-up over `per_param` |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for family, medians in results.items():
        per_param = medians.get("accel per_param")
        for name, t in medians.items():
            label = f'`impl="{name[6:]}"`' if name.startswith("accel ") else name
            cells = [
                family,
                label,
                f"{t * 1e3:.1f}",
                f"{walls[family][name] * 1e3:.1f}",
                _times(t, medians.get("torch default")),
                _times(t, medians.get("torch fused")),
                f"{per_param / t:.1f}×" if per_param else "–",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Targets (issue 2 §5), Adam:", ""]
    adam = results.get("Adam", {})
    per_param = adam.get("accel per_param")
    for impl, ref, limit in TARGETS[device.type]:
        t = adam.get(f"accel {impl}")
        if t is None or ref not in adam:
            continue
        ratio = t / adam[ref]
        lines.append(
            f'- `impl="{impl}"` takes {ratio:.2f}× the time of {ref} (target ≤ {limit}×): '
            f"**{_verdict(ratio <= limit)}**."
        )
        if per_param:
            speedup = per_param / t
            lines.append(
                f'- `impl="{impl}"` is {speedup:.1f}× faster than `impl="per_param"` (target ≥ '
                f"{MIN_SPEEDUP_OVER_PER_PARAM:g}×): "
                f"**{_verdict(speedup >= MIN_SPEEDUP_OVER_PER_PARAM)}**."
            )
    if device.type == "cpu" and per_param and "torch fused" in adam and "torch default" in adam:
        lines += [
            "",
            "Why the ≥ 4× targets are out of reach here: this package's `per_param` loop runs the "
            "same in-place kernels as torch's default loop, parameter after parameter, so on a CPU "
            "it is bound by memory bandwidth, not by Python: it takes "
            f"{per_param / adam['torch default']:.2f}× the time of torch default, and even torch's "
            f"single-pass fused kernel is only {per_param / adam['torch fused']:.1f}× faster than "
            "it.",
        ]
    compile_s = {f: w.get("accel compiled") for f, w in warmups.items()}
    if any(v is not None for v in compile_s.values()):
        lines += [
            "",
            'One-time cost of `impl="compiled"` (wall time of the first three steps: an eager '
            "step, then tracing and code generation), "
            + (
                "with an empty inductor cache, as on a first run: "
                if cold
                else "with inductor's on-disk cache left from earlier runs (a first run pays "
                "more; `--cold-compile` measures that): "
            )
            + ", ".join(f"{f} {s:.0f} s" for f, s in compile_s.items() if s is not None)
            + ". Compiled programs are cached per pipeline and parameter structure for the life "
            "of the process.",
        ]
    lines += [
        "",
        "For context only, figures from the issue (measured on a different 2-core CPU, wall "
        "time): the fastai-style per-parameter loop took 99.5 ms per Adam step on ResNet-34, "
        "`torch.optim.AdamW` default 26.8 ms and `AdamW(fused=True)` 10.4 ms; that loop was "
        f"{99.5 / 26.8:.2f}× torch default.",
    ]
    if "torch default" in adam:
        lines[-1] += " On that yardstick (times relative to torch default, across machines, so "
        lines[-1] += "an estimate only): " + ", ".join(
            f'`impl="{impl}"` {99.5 / 26.8 / (adam[f"accel {impl}"] / adam["torch default"]):.1f}×'
            for impl in ("auto", "compiled")
            if f"accel {impl}" in adam
        )
        lines[-1] += " faster than the fastai-style loop."
    if device.type == "cpu":
        lines += [
            "",
            "No GPU figure was measured: this machine has none. On CUDA the script runs as is "
            "(`--device cuda`); its targets there are `auto` ≤ 1.1× torch foreach and "
            "`compiled` ≤ 1.3× torch fused.",
        ]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    """Replace the optimizer section of docs/benchmarks.md, leaving the others untouched."""
    doc = DOC.read_text()
    pattern = re.compile(re.escape(SECTION) + r"\n.*?(?=^## |\Z)", re.S | re.M)
    if not pattern.search(doc):
        raise RuntimeError(f"{DOC} has no section {SECTION!r}")
    new = pattern.sub(lambda _: text + "\n", doc, count=1)
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(new)
    os.replace(tmp, DOC)  # atomic: a crash never leaves a half-written page


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=25, help="interleaved rounds (default 25)")
    parser.add_argument(
        "--families",
        nargs="+",
        default=["Adam", "SGD (mom=0.9)", "RMSProp", "LAMB"],
        choices=["Adam", "SGD (mom=0.9)", "RMSProp", "LAMB"],
    )
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared 2-core machine a second thread "
        "mostly measures the neighbours)",
    )
    parser.add_argument(
        "--cold-compile",
        action="store_true",
        help="compile into a fresh inductor cache directory, so the one-time cost of "
        'impl="compiled" is what a first run pays',
    )
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    if args.cold_compile:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="optimizer_step_inductor_")
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    params = resnet34_params(device)
    results, walls, warmups = {}, {}, {}
    for family in args.families:
        cpu, wall, warmups[family] = bench_family(family, params, device, args.rounds, args.impls)
        results[family] = cpu if device.type == "cpu" else wall
        walls[family] = wall
    load = (load_start, os.getloadavg()[0])
    text = render(results, walls, warmups, device, args.rounds, load, args.cold_compile)
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
