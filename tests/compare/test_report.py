"""The chapter's table and its figures: formatting, smoothing and validation averages."""

import csv
import math
from types import SimpleNamespace

import torch

from lightning_accel.compare.epoch_table import EpochTable
from lightning_accel.compare.report import (
    EpochRow,
    RecipeResult,
    epoch_table,
    format_time,
    summary_table,
    write_csv,
)


def test_times_print_as_the_reference_does():
    assert format_time(11.4) == "00:11"
    assert format_time(59.6) == "01:00"
    assert format_time(3725) == "1:02:05"


def test_the_epoch_table_has_the_chapters_columns_and_six_decimals():
    rows = [EpochRow(0, 2.571932, 2.68504, 0.322548, 11), EpochRow(1, 1.904674, 1.852589, 0.5, 71)]
    lines = epoch_table(rows).splitlines()
    assert lines[0].split() == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert lines[1].split() == ["0", "2.571932", "2.685040", "0.322548", "00:11"]
    assert lines[2].split() == ["1", "1.904674", "1.852589", "0.500000", "01:11"]
    # Columns line up: every value starts under its header.
    assert [lines[0].index(h) for h in ("train_loss", "accuracy")] == [
        lines[1].index("2.571932"),
        lines[1].index("0.322548"),
    ]


def test_summary_and_csv_carry_the_reference_figure(tmp_path):
    result = RecipeResult("adam", "Adam, fit_one_cycle(3, 0.003)", 0.595, seconds=33.0)
    result.rows = [EpochRow(0, 1.0, 0.9, 0.25, 10), EpochRow(1, 0.5, 0.4, 0.875, 10)]
    line = summary_table([result]).splitlines()[1].split()
    assert line[0] == "adam" and line[-3:] == ["0.8750", "00:33", "0.595"]
    with open(write_csv([result], tmp_path / "s.csv")) as f:
        (row,) = list(csv.DictReader(f))
    assert row == {
        "recipe": "adam",
        "description": "Adam, fit_one_cycle(3, 0.003)",
        "epochs": "2",
        "train_loss": "0.500000",
        "valid_loss": "0.400000",
        "accuracy": "0.875000",
        "seconds": "33.00",
        "reference_imagenette_accuracy": "0.595",
    }


def test_epoch_table_smooths_training_loss_and_averages_validation_by_sample():
    table = EpochTable()
    learn = SimpleNamespace(trainer=None, opt=None, epoch=0, training=True, loss=None)
    table.learn = learn
    table.before_fit()
    table.before_epoch()
    train_losses = [2.0, 1.0, 4.0]
    for loss in train_losses:
        learn.loss = torch.tensor(loss)
        table.after_batch()
    learn.training = False
    batches = [  # (loss, predictions, targets): sizes 3 and 1
        (0.5, [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [0, 1, 1]),
        (2.0, [[0.3, 0.7]], [0]),
    ]
    for loss, pred, target in batches:
        learn.loss, learn.pred = torch.tensor(loss), torch.tensor(pred)
        learn.yb = (torch.tensor(target),)
        table.after_batch()
    table.after_epoch()
    # The reference's smoothing, by hand in float64: debiased EMA with beta 0.98.
    avg, expected = 0.0, []
    for i, loss in enumerate(train_losses, 1):
        avg = 0.98 * avg + 0.02 * loss
        expected.append(avg / (1 - 0.98**i))
    assert len(table.step_losses) == 3
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(table.step_losses, expected))
    (row,) = table.rows
    assert math.isclose(row.train_loss, expected[-1], rel_tol=1e-6)
    assert math.isclose(row.valid_loss, (0.5 * 3 + 2.0 * 1) / 4)
    assert row.accuracy == 2 / 4
