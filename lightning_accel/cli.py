"""The `lightning-accel` command line; `compare` runs the chapter's optimizer comparison."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`prog: error: reason`) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def _int_at_least(minimum: int, meaning: str) -> Callable[[str], int]:
    """An argparse type for integers >= `minimum`; `meaning` words the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {meaning}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {meaning}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _devices(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def build_parser() -> argparse.ArgumentParser:
    from .compare import NAMED_DATA, RECIPES

    parser = _Parser(
        prog="lightning-accel",
        description="Chapter 16 of Deep Learning for Coders, in PyTorch Lightning.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    compare = commands.add_parser(
        "compare",
        help="train the chapter's five optimizer recipes from the same start and compare them",
        description=(
            "Train a randomly initialized ResNet with each of the chapter's optimizer recipes "
            "(same initial weights, same data order), print the chapter's per-epoch tables and "
            "a summary beside its published Imagenette accuracies, and write one TensorBoard run "
            "per recipe, a CSV, a loss plot and an accuracy plot under --logdir. Running it again "
            "with the same --logdir and settings keeps the recipes already complete and trains "
            "the rest (after an interruption, too)."
        ),
    )
    compare.add_argument(
        "--data",
        default="digits",
        metavar="{" + ",".join(NAMED_DATA) + ",PATH}",
        help="dataset name, or a folder with train/ and val/ class folders (default: digits, "
        "offline)",
    )
    compare.add_argument("--epochs", type=_positive_int, default=3, help="default: 3")
    compare.add_argument(
        "--batch-size", type=_positive_int, help="default: 64 for digits, 128 otherwise"
    )
    compare.add_argument(
        "--size", type=_positive_int, help="training image size; default: 32 for digits, 128"
    )
    compare.add_argument(
        "--presize",
        type=_positive_int,
        default=160,
        help="per-image resize before the batch crop (folders and Imagenette; default: 160)",
    )
    compare.add_argument(
        "--recipes",
        default=",".join(RECIPES),
        help=f"comma-separated subset of {','.join(RECIPES)} (default: all, in that order)",
    )
    compare.add_argument("--arch", default="resnet34", help="torchvision architecture")
    compare.add_argument(
        "--precision",
        help="Lightning precision, e.g. 32-true, bf16-mixed, 16-mixed (default: bf16-mixed on "
        "a GPU, 32-true on CPU)",
    )
    compare.add_argument("--accelerator", default="auto", help="Lightning accelerator")
    compare.add_argument("--devices", type=_devices, default=1, help="Lightning devices")
    compare.add_argument("--seed", type=int, default=0, help="default: 0")
    compare.add_argument(
        "--logdir",
        type=Path,
        help="where the TensorBoard runs, CSV and plots go (default: runs/compare-<time>); "
        "running again into the same folder keeps the recipes already complete there",
    )
    compare.add_argument(
        "--num-workers",
        type=_non_negative_int,
        help="loader processes (default: 0 for digits, the CPU count up to 8 otherwise)",
    )
    compare.add_argument(
        "--limit-batches",
        type=_positive_int,
        help="train and validate on this many batches per epoch (quick checks)",
    )
    compare.add_argument(
        "--data-dir",
        type=Path,
        help="dataset cache folder (default: $LIGHTNING_ACCEL_DATA or ~/.cache/lightning-accel)",
    )
    compare.add_argument(
        "--no-lr-find", action="store_true", help="skip the learning-rate finder before SGD"
    )
    compare.add_argument(
        "--lr-find-iters", type=_positive_int, default=100, help="lr_find steps (default: 100)"
    )
    compare.add_argument(
        "--channels-last", action="store_true", help="channels_last memory format (GPU speed)"
    )
    compare.add_argument(
        "--no-progress-bar",
        action="store_true",
        help="no progress bars, a line per epoch instead (the default when the output is not a "
        "terminal)",
    )
    compare.add_argument(
        "--monitor-every",
        type=_non_negative_int,
        default=None,
        help="log the optimizer's per-layer statistics to TensorBoard every N steps and "
        "histograms every 10 N (0: no monitor; default: 50 points and 12 histograms spread over "
        "each recipe's run, hyper-parameters every step)",
    )
    compare.add_argument(
        "--threads",
        type=_positive_int,
        help="torch CPU threads (default: half the CPUs, at least 1, which holds up when other "
        "jobs share the CPU; all the CPUs is faster only on an otherwise idle machine)",
    )
    compare.add_argument(
        "--force",
        action="store_true",
        help="train the recipes again even if --logdir already holds them complete",
    )
    return parser


def _config(args: argparse.Namespace):
    from .compare import CompareConfig

    recipes = tuple(name.strip() for name in args.recipes.split(",") if name.strip())
    logdir = args.logdir or Path("runs") / time.strftime("compare-%Y%m%d-%H%M%S")
    return CompareConfig(
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        size=args.size,
        presize=args.presize,
        recipes=recipes,
        arch=args.arch,
        precision=args.precision,
        accelerator=args.accelerator,
        devices=args.devices,
        seed=args.seed,
        logdir=logdir,
        num_workers=args.num_workers,
        limit_batches=args.limit_batches,
        lr_find=not args.no_lr_find,
        lr_find_iters=args.lr_find_iters,
        progress_bar=not args.no_progress_bar,
        channels_last=args.channels_last,
        data_dir=args.data_dir,
        threads=args.threads,
        monitor_every=args.monitor_every,
        force=args.force,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lightning-accel` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .compare import CompareError, CompareInterrupted, run_compare
    from .vision.download import DatasetUnavailableError

    prog = f"{parser.prog} {args.command}"
    try:
        run_compare(_config(args))
    except (CompareError, DatasetUnavailableError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except CompareInterrupted as exc:
        if str(exc):
            print(f"{prog}: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:  # before training started, or a second Ctrl-C
        print(f"{prog}: stopped by SIGINT; run the same command again to resume", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        _release_process_group()
    return 0


def _release_process_group() -> None:
    """Destroy the process group a DDP run leaves (Lightning destroys only NCCL's, at exit).

    Otherwise each process exits with gloo's and the TCPStore's threads still running, a teardown
    that can abort ("terminate called without an active exception").
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
