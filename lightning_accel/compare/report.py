"""What `lightning-accel compare` prints and writes: the chapter's tables, a CSV and two plots."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .files import atomic_path, write_text


@dataclass
class EpochRow:
    """One line of the chapter's per-epoch table; `seconds` is wall-clock time, as the chapter's."""

    epoch: int
    train_loss: float
    valid_loss: float
    accuracy: float
    seconds: float


@dataclass
class RecipeResult:
    """Everything one recipe's run produced; kept as `result.json` in its TensorBoard run."""

    name: str
    description: str
    reference_accuracy: float
    rows: list[EpochRow] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)  # smoothed, one per optimizer step
    wall_seconds: float = 0.0  # the whole fit, as a clock on the wall measures it
    cpu_seconds: float = 0.0  # CPU time of this process (all its threads) during the fit
    lr_find: dict[str, float] | None = None  # the finder's suggestions, for the recipe it preceded

    @property
    def accuracy(self) -> float:
        return self.rows[-1].accuracy if self.rows else math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecipeResult:
        rows = [EpochRow(**row) for row in data["rows"]]
        return cls(**{**data, "rows": rows})


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


EPOCH_HEADER = ("epoch", "train_loss", "valid_loss", "accuracy", "time")


def _epoch_cells(row: EpochRow) -> tuple[str, ...]:
    return (
        str(row.epoch),
        f"{row.train_loss:.6f}",
        f"{row.valid_loss:.6f}",
        f"{row.accuracy:.6f}",
        format_time(row.seconds),
    )


def epoch_table(rows: Sequence[EpochRow]) -> str:
    """`epoch train_loss valid_loss accuracy time`, six decimals, as in the chapter."""
    return _table(EPOCH_HEADER, [_epoch_cells(r) for r in rows])


def epoch_table_header() -> str:
    """The header `epoch_table_line` rows line up under, for a table printed as epochs end."""
    return "  ".join(EPOCH_HEADER)


def epoch_table_line(row: EpochRow) -> str:
    """One row under `epoch_table_header` (a wider value shifts only its own row)."""
    cells = _epoch_cells(row)
    return "  ".join(c.ljust(len(h)) for c, h in zip(cells, EPOCH_HEADER)).rstrip()


REFERENCE_COLUMN = "chapter, Imagenette (reference)"


def summary_table(results: Sequence[RecipeResult]) -> str:
    """One line per recipe: final accuracy, wall and CPU time, beside the chapter's figure."""
    header = ("recipe", "optimizer and schedule", "accuracy", "wall", "cpu", REFERENCE_COLUMN)
    body = [
        (
            r.name,
            r.description,
            f"{r.accuracy:.4f}",
            format_time(r.wall_seconds),
            format_time(r.cpu_seconds),
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
    "wall_seconds",
    "cpu_seconds",
    "reference_imagenette_accuracy",
)


def write_csv(results: Sequence[RecipeResult], path: Path) -> Path:
    """The summary as CSV, one row per recipe, final-epoch figures as the table prints them."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
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
                f"{r.wall_seconds:.2f}",
                f"{r.cpu_seconds:.2f}",
                f"{r.reference_accuracy:.3f}",
            ]
        )
    return write_text(path, out.getvalue())


# Validation losses above this multiple of the largest smoothed training loss are drawn at the
# top edge and labelled with their value, so one diverging recipe leaves the others readable.
OUTLIER_FACTOR = 3.0


def _colors(results: Sequence[RecipeResult]) -> list[str]:
    return [f"C{i % 10}" for i in range(len(results))]


def loss_ceiling(results: Sequence[RecipeResult]) -> float:
    """The loss plot's upper limit: every value up to `OUTLIER_FACTOR` x the largest smoothed
    training loss fits under it; larger validation losses are drawn clipped."""
    train = [v for r in results for v in r.train_losses if math.isfinite(v)]
    valid = [row.valid_loss for r in results for row in r.rows if math.isfinite(row.valid_loss)]
    if not train and not valid:
        return 1.0
    limit = OUTLIER_FACTOR * max(train) if train else math.inf
    shown = [v for v in train + valid if v <= limit]
    return 1.05 * max(shown) if shown else 1.0


def _epoch_ends(r: RecipeResult) -> list[float]:
    steps_per_epoch = len(r.train_losses) / len(r.rows) if r.rows else 0
    return [steps_per_epoch * (i + 1) for i in range(len(r.rows))]


def loss_figure(results: Sequence[RecipeResult]) -> Figure:
    """Smoothed training loss per step (lines), validation loss per epoch (dots), linear axis;
    validation losses above `loss_ceiling` sit on the top edge as triangles, each labelled with
    its recipe and value (labels at one step stacked downwards)."""
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    top = loss_ceiling(results)
    clipped: dict[float, list[tuple[float, str, str]]] = {}
    for r, color in zip(results, _colors(results)):
        if r.train_losses:
            ax.plot(range(1, len(r.train_losses) + 1), r.train_losses, color=color, label=r.name)
        xs, ys = _epoch_ends(r), [row.valid_loss for row in r.rows]
        inside = [(x, y) for x, y in zip(xs, ys) if y <= top]
        if inside:
            ax.plot(*zip(*inside), "o--", color=color, alpha=0.7)
        for x, y in zip(xs, ys):
            if not y <= top:  # above the ceiling, or NaN
                clipped.setdefault(x, []).append((y, r.name, color))
    for x, points in clipped.items():
        for k, (y, name, color) in enumerate(points):
            ax.plot([x], [top], "^", color=color, markersize=9, clip_on=False)
            ax.annotate(
                f"{name} {y:.3g}",
                (x, top),
                textcoords="offset points",
                xytext=(4, -14 - 11 * k),
                color=color,
                fontsize=8,
            )
    ax.set_ylim(0, top)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss (lines, smoothed) and validation loss (dots; ▲ off the scale)")
    if results:
        ax.legend(loc="best")
    fig.tight_layout()
    return fig


def accuracy_figure(results: Sequence[RecipeResult]) -> Figure:
    """Validation accuracy after each epoch, one line per recipe."""
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for r, color in zip(results, _colors(results)):
        epochs = [row.epoch + 1 for row in r.rows]
        ax.plot(epochs, [row.accuracy for row in r.rows], "o-", color=color, label=r.name)
    ax.set_ylim(0, 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Validation accuracy after each epoch")
    if results:
        ax.legend(loc="best")
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


def save_png(fig: Figure, path: Path) -> Path:
    """`fig` as PNG at `path`, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def plot_losses(results: Sequence[RecipeResult], path: Path) -> Path:
    """`loss_figure` saved as PNG."""
    return save_png(loss_figure(results), path)


def plot_accuracy(results: Sequence[RecipeResult], path: Path) -> Path:
    """`accuracy_figure` saved as PNG."""
    return save_png(accuracy_figure(results), path)
