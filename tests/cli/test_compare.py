"""`lightning-accel compare` end to end, on digits and on a generated Imagenette-layout folder."""

import csv
import io
import math
import os
import re
import subprocess
import sys
from contextlib import redirect_stdout

import lightning.pytorch as pl
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_accel.cli import main
from lightning_accel.compare.runner import RECIPES, CompareConfig, run_compare
from lightning_accel.vision import download

from ..vision.conftest import make_image_folder

ALL = list(RECIPES)
REFERENCE = {"adam": 0.595, "sgd": 0.409, "sgd_cb": 0.445, "momentum": 0.419, "rmsprop": 0.545}
# Small and fast, but every part of the command runs.
QUICK = [
    "--arch",
    "resnet18",
    "--no-progress-bar",
    "--limit-batches",
    "2",
    "--seed",
    "3",
    "--threads",
    "1",
]


def epoch_tables(out: str) -> dict[str, list[list[str]]]:
    """Each recipe's per-epoch rows, parsed from the printed output."""
    tables, current = {}, None
    for line in out.splitlines():
        header = re.match(r"^(\w+): ", line)
        if header and header.group(1) in RECIPES:
            current = header.group(1)
            tables[current] = []
        elif current and line.split()[:1] and line.split()[0].isdigit():
            tables[current].append(line.split())
        elif line.startswith("epoch"):
            assert line.split() == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    return tables


def scalars(run_dir) -> dict[str, list[float]]:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One full `compare` on digits, shared by the tests that read its output and files."""
    logdir = tmp_path_factory.mktemp("compare") / "runs"
    argv = ["compare", "--epochs", "2", "--batch-size", "16", "--size", "16"]
    argv += ["--lr-find-iters", "8", "--monitor-every", "1", "--logdir", str(logdir), *QUICK]
    out = io.StringIO()
    with redirect_stdout(out):
        status = main(argv)
    return status, out.getvalue(), logdir


def test_digits_prints_the_chapters_table_for_every_recipe(digits_run):
    status, out, _ = digits_run
    assert status == 0
    tables = epoch_tables(out)
    assert list(tables) == ALL
    for rows in tables.values():
        assert [r[0] for r in rows] == ["0", "1"]
        for _, train_loss, valid_loss, accuracy, time in rows:
            assert float(train_loss) > 0 and float(valid_loss) > 0
            assert 0 <= float(accuracy) <= 1
            assert re.fullmatch(r"\d\d:\d\d", time)
    assert re.search(r"lr_find \(SGD\): valley=\S+, minimum=\S+, steep=\S+", out)


def test_the_summary_sets_each_recipe_beside_the_chapters_figure(digits_run):
    _, out, _ = digits_run
    summary = out[out.index("Summary") :]
    assert "Imagenette only, not an expectation" in summary
    assert "chapter, Imagenette (reference)" in summary
    for name, reference in REFERENCE.items():
        line = next(line for line in summary.splitlines() if line.startswith(name + " "))
        assert line.rstrip().endswith(f"{reference:.3f}")
    assert "SGD, fit_one_cycle(2, 0.03, moms=(0.0, 0.0, 0.0))" in summary
    assert "[sgd_step], fit(2, 0.03)" in summary


def test_the_csv_holds_the_final_epoch_of_each_recipe(digits_run):
    _, out, logdir = digits_run
    with open(logdir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["recipe"] for r in rows] == ALL
    tables = epoch_tables(out)
    for row in rows:
        last = tables[row["recipe"]][-1]
        assert row["epochs"] == "2"
        assert float(row["accuracy"]) == pytest.approx(float(last[3]), abs=1e-6)
        assert float(row["valid_loss"]) == pytest.approx(float(last[2]), abs=1e-6)
        assert float(row["reference_imagenette_accuracy"]) == REFERENCE[row["recipe"]]
        assert float(row["seconds"]) > 0


def test_one_tensorboard_run_per_recipe_holds_the_same_figures(digits_run):
    _, out, logdir = digits_run
    tables = epoch_tables(out)
    for name in ALL:
        run = logdir / name
        assert list(run.glob("events.out.tfevents.*")), f"no event file for {name}"
        values = scalars(run)
        accuracy = [float(r[3]) for r in tables[name]]
        assert values["chapter/accuracy"] == pytest.approx(accuracy, abs=1e-6)
        assert len(values["chapter/valid_loss"]) == 2
        assert len(values["chapter/train_loss"]) == 4  # 2 epochs x 2 batches, smoothed
        assert all(math.isfinite(v) and v > 0 for v in values["chapter/lr"])
        # The optimizer monitor rides along: its hyper-parameter curve is the scheduled lr.
        assert values["hypers/lr/group0"] == pytest.approx(values["chapter/lr"], rel=1e-6)


def test_the_loss_plots_are_written(digits_run):
    _, _, logdir = digits_run
    for name in ("losses.png", "lr_find_sgd.png"):
        with Image.open(logdir / name) as img:
            assert img.format == "PNG" and img.size[0] > 300


def test_recipes_start_from_identical_weights_and_batches(tmp_path):
    first_steps = []

    class FirstBatch(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0 and trainer.current_epoch == 0:
                weights = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
                first_steps.append((weights.clone(), batch[0].clone(), batch[1].clone()))

    config = CompareConfig(
        recipes=("adam", "rmsprop"),
        epochs=1,
        batch_size=8,
        size=16,
        arch="resnet18",
        limit_batches=2,
        lr_find=False,
        progress_bar=False,
        logdir=tmp_path / "runs",
        extra_trainer_kwargs={"callbacks": [FirstBatch()]},
    )
    results = run_compare(config, echo=lambda text: None)
    (w1, x1, y1), (w2, x2, y2) = first_steps
    assert torch.equal(w1, w2) and torch.equal(x1, x2) and torch.equal(y1, y2)
    # Same start, different optimizers: the runs must then differ.
    assert results[0].train_losses != results[1].train_losses


def test_an_imagenette_layout_folder_runs_end_to_end(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", n_train=3, n_val=2)
    logdir = tmp_path / "runs"
    argv = ["compare", "--data", str(data), "--recipes", "adam,momentum", "--epochs", "1"]
    argv += ["--batch-size", "4", "--size", "32", "--presize", "40", "--num-workers", "0"]
    argv += ["--no-lr-find", "--logdir", str(logdir), *QUICK]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(3 classes)" in out
    assert list(epoch_tables(out)) == ["adam", "momentum"]
    with open(logdir / "summary.csv") as f:
        assert [r["recipe"] for r in csv.DictReader(f)] == ["adam", "momentum"]
    assert scalars(logdir / "momentum")["chapter/accuracy"]


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def parse_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--epochs", "0"], "--epochs: expected a positive integer, got 0"),
        (["--batch-size", "x"], "--batch-size: expected a positive integer, got 'x'"),
        (["--num-workers", "-1"], "--num-workers: expected an integer >= 0, got -1"),
        (["--monitor-every", "-1"], "--monitor-every: expected an integer >= 0, got -1"),
    ],
)
def test_malformed_options_end_with_one_line_and_status_2(capsys, argv, expected):
    assert expected in parse_error(capsys, ["compare", *argv])


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--recipes", "adam,adamw"], "--recipes: unknown adamw; choose from adam, sgd"),
        (["--data", "no/such/folder"], "--data: 'no/such/folder' is neither one of digits"),
        (["--precision", "17"], "Precision '17' is invalid"),
        (["--arch", "resnet35"], "--arch: 'resnet35' is not a torchvision classification model"),
        (["--data", "imagenette-160", "--size", "192"], "--size (192) must not exceed --presize"),
    ],
)
def test_unusable_settings_end_with_one_line_and_status_2(tmp_path, capsys, argv, expected):
    err = one_line_error(capsys, ["compare", "--logdir", str(tmp_path / "runs"), *argv])
    assert expected in err and err.startswith("lightning-accel compare: error:")
    assert not (tmp_path / "runs").exists()  # nothing written


def test_a_logdir_holding_runs_is_refused(digits_run, capsys):
    _, _, logdir = digits_run
    err = one_line_error(capsys, ["compare", "--logdir", str(logdir)])
    assert "already holds runs for adam" in err


def test_imagenette_offline_ends_with_where_to_put_it(tmp_path, capsys, monkeypatch):
    offline = download.ArchiveSource("imagenette2-160", "http://127.0.0.1:9/imagenette2-160.tgz")
    monkeypatch.setitem(download.IMAGENETTE_SOURCES, ("imagenette", "160"), offline)
    argv = ["compare", "--data", "imagenette-160", "--data-dir", str(tmp_path / "cache")]
    err = one_line_error(capsys, [*argv, "--logdir", str(tmp_path / "runs"), "--no-progress-bar"])
    assert "could not download imagenette2-160" in err and str(tmp_path / "cache") in err
    assert not (tmp_path / "runs").exists()


def test_the_module_entry_point_reports_bad_arguments_with_status_2():
    result = subprocess.run(
        [sys.executable, "-m", "lightning_accel", "compare", "--recipes", "nadam"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "lightning-accel compare: error: --recipes: unknown nadam; choose from "
        "adam, sgd, sgd_cb, momentum, rmsprop"
    ]


def test_it_runs_under_ddp_with_one_report(tmp_path, free_port):
    # Lightning relaunches the command itself for rank 1: a real 2-process gloo run.
    logdir = tmp_path / "runs"
    argv = ["compare", "--devices", "2", "--accelerator", "cpu", "--recipes", "momentum"]
    argv += ["--epochs", "1", "--batch-size", "8", "--size", "16", "--no-lr-find"]
    argv += ["--logdir", str(logdir), *QUICK]
    result = subprocess.run(
        [sys.executable, "-m", "lightning_accel", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        # Its own rendezvous port, whatever DDP tests in other workers or earlier in this one set.
        env={**os.environ, "MASTER_PORT": str(free_port)},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    header = ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert [line.split() for line in result.stdout.splitlines()].count(header) == 1, output[-3000:]
    assert "GLOBAL_RANK: 1" in output, output[-3000:]
    # Only rank 0's status is returned: rank 1 dying at exit would show here alone.
    assert "terminate called" not in output, output[-3000:]
    with open(logdir / "summary.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert 0 <= float(row["accuracy"]) <= 1
    assert scalars(logdir / "momentum")["chapter/accuracy"] == [float(row["accuracy"])]


def test_a_folder_without_images_ends_with_one_line_and_status_2(tmp_path, capsys):
    for split in ("train", "val"):
        (tmp_path / "data" / split / "cats").mkdir(parents=True)
    argv = ["compare", "--data", str(tmp_path / "data"), "--logdir", str(tmp_path / "runs")]
    err = one_line_error(capsys, [*argv, "--no-progress-bar"])
    assert "holds no images" in err and "train" in err
    assert not (tmp_path / "runs").exists()
