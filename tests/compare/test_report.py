"""The chapter's table and its figures: formatting, smoothing and validation averages."""

import csv
import json
import math
from types import SimpleNamespace

import pytest
import torch

from lightning_accel.compare.epoch_table import EpochTable
from lightning_accel.compare.report import (
    EpochRow,
    RecipeResult,
    accuracy_figure,
    epoch_table,
    epoch_table_header,
    epoch_table_line,
    format_time,
    loss_ceiling,
    loss_figure,
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


def test_rows_printed_as_epochs_end_line_up_under_the_header():
    header = epoch_table_header()
    line = epoch_table_line(EpochRow(2, 0.472096, 0.111508, 0.966667, 6.2))
    assert header.split() == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert line.split() == ["2", "0.472096", "0.111508", "0.966667", "00:06"]
    for name, value in (("train_loss", "0.472096"), ("accuracy", "0.966667"), ("time", "00:06")):
        assert header.index(name) == line.index(value)


def test_summary_and_csv_carry_the_reference_figure(tmp_path):
    result = RecipeResult(
        "adam", "Adam, fit_one_cycle(3, 0.003)", 0.595, wall_seconds=33.0, cpu_seconds=61.4
    )
    result.rows = [EpochRow(0, 1.0, 0.9, 0.25, 10), EpochRow(1, 0.5, 0.4, 0.875, 10)]
    line = summary_table([result]).splitlines()[1].split()
    assert line[0] == "adam" and line[-4:] == ["0.8750", "00:33", "01:01", "0.595"]
    with open(write_csv([result], tmp_path / "s.csv")) as f:
        (row,) = list(csv.DictReader(f))
    assert row == {
        "recipe": "adam",
        "description": "Adam, fit_one_cycle(3, 0.003)",
        "epochs": "2",
        "train_loss": "0.500000",
        "valid_loss": "0.400000",
        "accuracy": "0.875000",
        "wall_seconds": "33.00",
        "cpu_seconds": "61.40",
        "reference_imagenette_accuracy": "0.595",
    }


def test_a_result_survives_its_json_form():
    result = RecipeResult("sgd", "SGD", 0.409, [EpochRow(0, 2.5, 2.25, 0.5, 3.0)], [2.5, 2.4])
    result.lr_find = {"valley": 1e-3}
    assert RecipeResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def _recipe(name, train_losses, valid_losses, accuracies):
    rows = [
        EpochRow(i, train_losses[-1], v, a, 1.0)
        for i, (v, a) in enumerate(zip(valid_losses, accuracies))
    ]
    return RecipeResult(name, name, 0.5, rows, list(train_losses))


def _line_points(ax):
    return [list(zip(*line.get_data())) for line in ax.get_lines()]


def test_a_diverging_validation_loss_is_clipped_and_labelled_not_allowed_to_flatten_the_rest():
    calm = _recipe("adam", [2.3, 1.5, 1.0, 0.6], [0.9, 0.4], [0.7, 0.9])
    wild = _recipe("momentum", [2.3, 2.2, 1.8, 1.4], [15793.64, 0.32], [0.1, 0.88])
    fig = loss_figure([calm, wild])
    (ax,) = fig.axes
    top = ax.get_ylim()[1]
    # The ceiling fits every training loss and every validation loss below the outlier limit.
    assert top == loss_ceiling([calm, wild]) == pytest.approx(1.05 * 2.3)
    points = _line_points(ax)
    # Training curves: step 1..4, the smoothed losses as given.
    assert points[0] == [(1, 2.3), (2, 1.5), (3, 1.0), (4, 0.6)]
    # Validation dots at the end of each epoch (2 steps per epoch), at their values.
    assert points[1] == [(2.0, 0.9), (4.0, 0.4)]
    assert points[3] == [(4.0, 0.32)]  # momentum's second epoch, inside the axis
    assert points[4] == [(2.0, top)]  # its first: a marker on the top edge ...
    assert [t.get_text() for t in ax.texts] == ["momentum 1.58e+04"]  # ... with its value
    assert ax.texts[0].xy == (2.0, top)


def test_labels_of_losses_clipped_at_one_step_do_not_overlap():
    recipes = [
        _recipe("adam", [2.0, 1.0], [45.4, 0.2], [0.2, 0.9]),
        _recipe("momentum", [2.0, 1.5], [26458.8, 0.5], [0.1, 0.8]),
    ]
    (ax,) = loss_figure(recipes).axes
    labels = {t.get_text(): t.xyann for t in ax.texts}
    assert set(labels) == {"adam 45.4", "momentum 2.65e+04"}
    assert labels["adam 45.4"][1] != labels["momentum 2.65e+04"][1]


def test_the_accuracy_plot_has_one_line_per_recipe_by_epoch():
    a = _recipe("adam", [1.0], [0.9, 0.4, 0.3], [0.7, 0.9, 0.95])
    b = _recipe("sgd", [1.0], [0.9, 0.5, 0.3], [0.6, 0.8, 0.97])
    (ax,) = accuracy_figure([a, b]).axes
    assert _line_points(ax) == [
        [(1, 0.7), (2, 0.9), (3, 0.95)],
        [(1, 0.6), (2, 0.8), (3, 0.97)],
    ]
    assert ax.get_ylim() == (0, 1)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["adam", "sgd"]


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
