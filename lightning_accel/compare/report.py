"""What `lightning-accel compare` prints and writes: the chapter's tables, a CSV, a loss plot."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure


@dataclass
class EpochRow:
    """One line of the chapter's per-epoch table."""

    epoch: int
    train_loss: float
    valid_loss: float
    accuracy: float
    seconds: float


@dataclass
class RecipeResult:
    """Everything one recipe's run produced."""

    name: str
    description: str
    reference_accuracy: float
    rows: list[EpochRow] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)  # smoothed, one per optimizer step
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.rows[-1].accuracy if self.rows else math.nan


def format_time(seconds: float) -> str:
    """mm:ss as the reference prints epoch times (h:mm:ss past an hour)."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    lines = [header, *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def epoch_table(rows: Sequence[EpochRow]) -> str:
    """`epoch train_loss valid_loss accuracy time`, six decimals, as in the chapter."""
    header = ("epoch", "train_loss", "valid_loss", "accuracy", "time")
    body = [
        (
            str(r.epoch),
            f"{r.train_loss:.6f}",
            f"{r.valid_loss:.6f}",
            f"{r.accuracy:.6f}",
            format_time(r.seconds),
        )
        for r in rows
    ]
    return _table(header, body)


REFERENCE_COLUMN = "chapter, Imagenette (reference)"


def summary_table(results: Sequence[RecipeResult]) -> str:
    """One line per recipe: its final accuracy and time beside the chapter's published figure."""
    header = ("recipe", "optimizer and schedule", "accuracy", "time", REFERENCE_COLUMN)
    body = [
        (
            r.name,
            r.description,
            f"{r.accuracy:.4f}",
            format_time(r.seconds),
            f"{r.reference_accuracy:.3f}",
        )
        for r in results
    ]
    return _table(header, body)


CSV_FIELDS = (
    "recipe",
    "description",
    "epochs",
    "train_loss",
    "valid_loss",
    "accuracy",
    "seconds",
    "reference_imagenette_accuracy",
)


def write_csv(results: Sequence[RecipeResult], path: Path) -> Path:
    """The summary as CSV, one row per recipe, final-epoch figures."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        for r in results:
            last = r.rows[-1] if r.rows else EpochRow(0, math.nan, math.nan, math.nan, 0.0)
            writer.writerow(
                [
                    r.name,
                    r.description,
                    len(r.rows),
                    f"{last.train_loss:.6f}",
                    f"{last.valid_loss:.6f}",
                    f"{last.accuracy:.6f}",
                    f"{r.seconds:.2f}",
                    f"{r.reference_accuracy:.3f}",
                ]
            )
    return path


def plot_losses(results: Sequence[RecipeResult], path: Path) -> Path:
    """Smoothed training loss per step (lines) and validation loss per epoch (dots), per recipe."""
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    colors = [f"C{i}" for i in range(10)]
    for r, color in zip(results, colors * 10):
        if r.train_losses:
            ax.plot(range(1, len(r.train_losses) + 1), r.train_losses, color=color, label=r.name)
        if r.rows and r.train_losses:
            steps_per_epoch = len(r.train_losses) / len(r.rows)
            xs = [steps_per_epoch * (i + 1) for i in range(len(r.rows))]
            ys = [row.valid_loss for row in r.rows]
            ax.plot(xs, ys, "o--", color=color, alpha=0.7)
    ax.set_xlabel("optimizer step")
    # Log scale: an unstable epoch's validation loss can be 1e4 times the others.
    ax.set_yscale("log")
    ax.set_ylabel("loss (log scale)")
    ax.set_title("Training loss (lines, smoothed) and validation loss (dots)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path
