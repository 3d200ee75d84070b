"""`lightning-accel compare` end to end: its numbers, its files, re-runs, interrupts and errors."""

import csv
import io
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from lightning_accel.cli import main
from lightning_accel.compare import RECIPES, CompareConfig, run_compare
from lightning_accel.compare.report import format_time
from lightning_accel.vision import download
from lightning_accel.vision.digits import fixed_split, load_digits_tensors
from lightning_accel.vision.models import vision_model

from ..tiny import one_cycle
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
# The digits run shared by most tests: 2 epochs of 2 batches of 16 images per recipe.
DIGITS = ["--epochs", "2", "--batch-size", "16", "--size", "16", "--lr-find-iters", "8"]
DIGITS += [*QUICK]  # the optimizer monitor at its defaults
N_VALID = 2 * 16  # validation images each epoch: --limit-batches 2, --batch-size 16


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


def files_of(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time (ns)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_main(argv) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        status = main(argv)
    return status, out.getvalue()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One full `compare` on digits, shared by the tests that read its output and files."""
    logdir = tmp_path_factory.mktemp("compare") / "runs"
    status, out = run_main(["compare", *DIGITS, "--logdir", str(logdir)])
    return status, out, logdir


def test_digits_prints_the_chapters_table_for_every_recipe(digits_run):
    status, out, logdir = digits_run
    assert status == 0
    tables = epoch_tables(out)
    assert list(tables) == ALL
    for name, rows in tables.items():
        assert [r[0] for r in rows] == ["0", "1"]
        values = scalars(logdir / name)
        for (epoch, train_loss, valid_loss, accuracy, time_), logged_valid, logged_acc in zip(
            rows, values["chapter/valid_loss"], values["chapter/accuracy"]
        ):
            # The printed figures are the logged ones (event files hold float32), rounded to six
            # decimals.
            assert float(valid_loss) == pytest.approx(logged_valid, rel=1e-6, abs=1e-6)
            assert float(accuracy) == pytest.approx(logged_acc, rel=1e-6, abs=1e-6)
            # The smoothed training loss at the epoch's last step (2 steps per epoch).
            logged_train = values["chapter/train_loss"][2 * (int(epoch) + 1) - 1]
            assert float(train_loss) == pytest.approx(logged_train, rel=1e-6, abs=1e-6)
            # An accuracy over 32 images is a whole number of them.
            assert float(accuracy) * N_VALID == pytest.approx(round(float(accuracy) * N_VALID))
            assert re.fullmatch(r"\d\d:\d\d", time_)
    assert re.search(r"lr_find \(SGD\): valley=\S+, minimum=\S+, steep=\S+", out)
    # Not a terminal: a line per epoch, no progress bar redraws.
    assert "it/s" not in out and "\r" not in out


def test_the_summary_sets_each_recipe_beside_the_chapters_figure(digits_run):
    _, out, logdir = digits_run
    summary = out[out.index("Summary") :]
    assert "Imagenette only, not an expectation" in summary
    assert "chapter, Imagenette (reference)" in summary
    with open(logdir / "summary.csv") as f:
        rows = {r["recipe"]: r for r in csv.DictReader(f)}
    for name, reference in REFERENCE.items():
        line = next(line for line in summary.splitlines() if line.startswith(name + " "))
        *_, accuracy, wall, cpu, chapter = line.split()
        assert chapter == f"{reference:.3f}"
        assert accuracy == f"{float(rows[name]['accuracy']):.4f}"
        # The CSV rounds to hundredths; the recipe's result file holds the times the summary used.
        result = json.loads((logdir / name / "result.json").read_text())
        assert wall == format_time(result["wall_seconds"])
        assert cpu == format_time(result["cpu_seconds"])
        assert float(rows[name]["wall_seconds"]) == pytest.approx(result["wall_seconds"], abs=0.005)
    assert "SGD, fit_one_cycle(2, 0.03, moms=(0.0, 0.0, 0.0))" in summary
    assert "[sgd_step], fit(2, 0.03)" in summary


def test_the_end_says_where_the_logs_are_and_how_to_open_them(digits_run):
    _, out, logdir = digits_run
    assert out.rstrip().splitlines()[-1].endswith(f"open them with: tensorboard --logdir {logdir}")


def test_the_csv_holds_the_final_epoch_of_each_recipe(digits_run):
    _, out, logdir = digits_run
    with open(logdir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["recipe"] for r in rows] == ALL
    tables = epoch_tables(out)
    for row in rows:
        last = tables[row["recipe"]][-1]
        assert row["epochs"] == "2"
        # Exactly the printed figures (both six decimals).
        assert [row["train_loss"], row["valid_loss"], row["accuracy"]] == last[1:4]
        assert float(row["reference_imagenette_accuracy"]) == REFERENCE[row["recipe"]]
        result = json.loads((logdir / row["recipe"] / "result.json").read_text())
        # The fit's wall time holds both epochs' (training and validation) and more.
        assert float(row["wall_seconds"]) >= sum(r["seconds"] for r in result["rows"]) - 0.01
        assert float(row["cpu_seconds"]) == pytest.approx(result["cpu_seconds"], abs=0.01)


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
        # The scheduled lr of each of the 4 steps: 1cycle at k/4 of the way, or constant.
        recipe = RECIPES[name]
        lrs = [one_cycle(k / 4, recipe.lr)[0] if recipe.one_cycle else recipe.lr for k in range(4)]
        assert values["chapter/lr"] == pytest.approx(lrs, rel=1e-6)
        # The optimizer monitor rides along: its hyper-parameter curve is the scheduled lr.
        assert values["hypers/lr/group0"] == pytest.approx(values["chapter/lr"], rel=1e-6)
        # HParams compares the recipes on the final accuracy as well as the loss.
        assert values["final/accuracy"] == pytest.approx([accuracy[-1]], abs=1e-6)
        assert values["final/valid_loss"] == pytest.approx([float(tables[name][-1][2])], rel=1e-5)
    assert not list(logdir.glob("*.incomplete")) and not list(logdir.glob(".*"))


# What each recipe's optimizer keeps: the per-layer statistics and histograms of its state.
STATE_STATS = {
    "adam": {"grad_avg_norm", "sqr_avg_sqrt_mean"},
    "sgd": set(),
    "sgd_cb": set(),
    "momentum": {"grad_avg_norm"},
    "rmsprop": {"sqr_avg_sqrt_mean"},
}
STATE_HISTOGRAMS = {"grad_avg_norm": "grad_avg", "sqr_avg_sqrt_mean": "sqr_avg_sqrt"}


def test_each_recipes_run_holds_the_optimizer_internals_at_the_monitors_defaults(digits_run):
    """The default monitor in a default compare: lr/mom every step, per-layer statistics and
    histograms at the first and last step (a 4-step run has fewer steps than points: all of
    them), and the HParams session with the final loss and accuracy."""
    _, out, logdir = digits_run
    tables = epoch_tables(out)
    steps = [0, 1, 2, 3]  # 2 epochs x 2 batches
    # The stem, a block of each end of the body, a batchnorm and the last layer of the head.
    layers = ["model.body.conv1", "model.body.layer1.0.conv1", "model.body.layer4.1.bn2"]
    layers.append("model.head.8")
    for name in RECIPES:
        acc = EventAccumulator(str(logdir / name), size_guidance={"histograms": 0, "scalars": 0})
        acc.Reload()
        scalar_tags, histogram_tags = set(acc.Tags()["scalars"]), set(acc.Tags()["histograms"])
        step_of = {tag: sorted(e.step for e in acc.Scalars(tag)) for tag in scalar_tags}
        # Every hyper-parameter of every group, every step; 1cycle schedules the momentum of the
        # recipes that have one (RMSProp's is sqr_mom, sgd_cb has none).
        hypers = {t for t in scalar_tags if t.startswith("hypers/")}
        assert {"hypers/lr/group0", "hypers/lr/group2"} <= hypers
        assert ("hypers/mom/group0" in hypers) == (name in ("adam", "sgd", "momentum"))
        assert ("hypers/sqr_mom/group0" in hypers) == (name in ("adam", "rmsprop"))
        assert all(step_of[tag] == steps for tag in hypers)
        stats = {"grad_norm", "update_ratio", "step_size"} | STATE_STATS[name]
        kinds = {"weight", "grad", "update"} | {STATE_HISTOGRAMS[s] for s in STATE_STATS[name]}
        found_stats = {t.split("/")[0] for t in scalar_tags}
        assert found_stats & (set(STATE_HISTOGRAMS) | {"trust_ratio"}) == STATE_STATS[name]
        assert {t.split("/")[0] for t in histogram_tags} == kinds
        for layer in layers:
            for stat in stats:
                assert step_of[f"{stat}/{layer}"] == steps, (name, stat, layer)
            for kind in kinds:
                events = acc.Histograms(f"{kind}/{layer}")
                assert [e.step for e in events] == steps, (name, kind, layer)
        # The HParams tab compares the recipes on the final validation loss and accuracy.
        content = acc.SummaryMetadata("_hparams_/experiment").plugin_data.content
        experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
        assert sorted(m.name.tag for m in experiment.metric_infos) == [
            "final/accuracy",
            "final/valid_loss",
        ]
        final = acc.Scalars("final/accuracy")[0].value
        assert final == pytest.approx(float(tables[name][-1][3]), abs=1e-6)


def test_the_plots_are_written(digits_run):
    _, _, logdir = digits_run
    for name in ("losses.png", "accuracy.png", "lr_find_sgd.png"):
        with Image.open(logdir / name) as img:
            assert img.format == "PNG" and img.size[0] > 300


def test_a_second_run_with_the_same_settings_trains_nothing_and_loses_nothing(digits_run):
    _, first_out, logdir = digits_run
    before = files_of(logdir)
    summary = (logdir / "summary.csv").read_text()
    # `--precision 32` is Lightning's shorthand for what ran: the same experiment.
    status, out = run_main(["compare", *DIGITS, "--precision", "32", "--logdir", str(logdir)])
    assert status == 0
    assert "precision 32-true" in out.splitlines()[0]
    assert f"Kept from an earlier run in {logdir}: {', '.join(ALL)}" in out
    assert epoch_tables(out) == {} and "lr_find" not in out
    after = files_of(logdir)
    # The runs are untouched; the summary is rewritten with the same content.
    runs = {k: v for k, v in before.items() if "/" in k}
    assert {k: after[k] for k in runs} == runs
    assert (logdir / "summary.csv").read_text() == summary
    assert out[out.index("Summary") :] == first_out[first_out.index("Summary") :]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--epochs", "3"], "--epochs 2 (this command: 3)"),
        (["--seed", "4"], "--seed 3 (this command: 4)"),
        (["--size", "24", "--batch-size", "8"], "--batch-size 16 (this command: 8), --size 16"),
        (["--limit-batches", "3"], "--limit-batches 2 (this command: 3)"),
    ],
)
def test_other_settings_in_the_same_logdir_are_refused(digits_run, capsys, argv, expected):
    _, _, logdir = digits_run
    before = files_of(logdir)
    err = one_line_error(capsys, ["compare", *DIGITS, *argv, "--logdir", str(logdir)])
    assert f"--logdir: {logdir} holds a comparison made with " in err and expected in err
    assert files_of(logdir) == before


def test_recipes_are_trained_on_identical_starts_and_report_what_the_model_does(tmp_path):
    first_steps, trained = [], []

    class Capture(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0 and trainer.current_epoch == 0:
                weights = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
                first_steps.append((weights.clone(), batch[0].clone(), batch[1].clone()))

        def on_fit_end(self, trainer, pl_module):
            trained.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})

    config = CompareConfig(
        recipes=("adam", "rmsprop"),
        epochs=1,
        batch_size=8,
        size=16,
        arch="resnet18",
        limit_batches=2,
        lr_find=False,
        progress_bar=False,
        threads=1,
        logdir=tmp_path / "runs",
        extra_trainer_kwargs={"callbacks": [Capture()]},
    )
    results = run_compare(config, echo=lambda text: None)
    (w1, x1, y1), (w2, x2, y2) = first_steps
    assert torch.equal(w1, w2) and torch.equal(x1, x2) and torch.equal(y1, y2)
    # Same start, different optimizers: the runs must then differ.
    assert results[0].train_losses != results[1].train_losses
    # Each reported validation loss and accuracy is what the trained model does on the first
    # 2 batches of 8 validation images, evaluated here on its own in float64.
    images, labels = load_digits_tensors(16)
    train, valid = fixed_split(labels)
    mean, std = images[train].mean().item(), images[train].std().item()
    x = ((images[valid][:16] - mean) / std).expand(-1, 3, -1, -1)
    y = labels[valid][:16]
    for result, weights in zip(results, trained):
        model = vision_model("resnet18", n_out=10)
        model.load_state_dict(weights)
        model.eval()
        with torch.no_grad():
            logits = model(x).double()
        loss = F.cross_entropy(logits, y).item()
        accuracy = (logits.argmax(-1) == y).double().mean().item()
        (row,) = result.rows
        assert row.accuracy == accuracy
        assert row.valid_loss == pytest.approx(loss, rel=1e-5)


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
    assert err.startswith("lightning-accel compare: error: ")
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
        (
            ["--precision", "16-mixed", "--accelerator", "cpu"],
            "--precision 16-mixed: the cpu accelerator cannot run 16-mixed (Lightning would run "
            "bf16-mixed instead); choose bf16-mixed or 32-true",
        ),
        (["--arch", "resnet35"], "--arch: 'resnet35' is not a torchvision classification model"),
        (["--data", "imagenette-160", "--size", "192"], "--size (192) must not exceed --presize"),
    ],
)
def test_unusable_settings_end_with_one_line_and_status_2(tmp_path, capsys, argv, expected):
    err = one_line_error(capsys, ["compare", "--logdir", str(tmp_path / "runs"), *argv])
    assert expected in err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_a_logdir_that_is_a_file_or_cannot_be_made_ends_with_one_line(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    cases = [
        (afile, f"--logdir: {afile} is a file, not a folder"),
        (afile / "runs", f"--logdir: cannot create {afile / 'runs'}: {afile} is a file"),
        (Path("/proc/nope/runs"), "--logdir: cannot create /proc/nope/runs: /proc is not writable"),
    ]
    for logdir, expected in cases:
        assert expected in one_line_error(capsys, ["compare", "--logdir", str(logdir)])
    assert afile.read_text() == "keep me"


def test_a_folder_without_train_and_val_class_folders_is_named(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "train" / "cats").mkdir(parents=True)
    (data / "val").mkdir()
    (tmp_path / "notes.txt").write_text("not a folder")
    cases = [
        (data, f"--data: {data} has no val/ folder of class folders (expected {data}/val/<class>/"),
        (tmp_path / "notes.txt", f"--data: {tmp_path / 'notes.txt'} is a file, not a folder"),
    ]
    for folder, expected in cases:
        argv = ["compare", "--data", str(folder), "--logdir", str(tmp_path / "runs")]
        assert expected in one_line_error(capsys, argv)
    assert not (tmp_path / "runs").exists()


def test_a_folder_without_images_ends_with_one_line_and_status_2(tmp_path, capsys):
    for split in ("train", "val"):
        (tmp_path / "data" / split / "cats").mkdir(parents=True)
    argv = ["compare", "--data", str(tmp_path / "data"), "--logdir", str(tmp_path / "runs")]
    err = one_line_error(capsys, [*argv, "--no-progress-bar"])
    assert "holds no images" in err and "train" in err
    assert not (tmp_path / "runs").exists()


def test_a_file_that_is_not_an_image_stops_the_run_before_it_starts(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", n_train=2, n_val=1)
    bad = next((data / "val").iterdir()) / "notes.JPEG"
    bad.write_text("a text file with an image's name")
    argv = ["compare", "--data", str(data), "--logdir", str(tmp_path / "runs"), *QUICK]
    err = one_line_error(capsys, argv)
    assert f"--data: cannot read image {bad}: cannot identify image file" in err
    assert not (tmp_path / "runs").exists()


def test_an_image_that_fails_to_decode_stops_the_run_with_its_name(tmp_path, capsys):
    # Its header is sound, so it is found only when a loader worker decodes it, mid-run.
    data = make_image_folder(tmp_path / "data", n_train=2, n_val=1)
    good = sorted((data / "train").rglob("*.JPEG"))[-1]
    bad = good.with_name("truncated.JPEG")
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    logdir = tmp_path / "runs"
    argv = ["compare", "--data", str(data), "--recipes", "adam", "--epochs", "1"]
    argv += ["--batch-size", "16", "--size", "32", "--presize", "40", "--num-workers", "1"]
    argv += ["--no-lr-find", "--logdir", str(logdir), *QUICK]
    err = one_line_error(capsys, argv)
    assert f"--data: cannot read image {bad}: image file is truncated" in err
    assert not (logdir / "adam").exists()  # the recipe did not finish, and does not look finished


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


# The command in a child process that holds one training batch (after its optimizer step) until
# a stop signal has arrived, so the signal always lands inside that batch (no sleeps, no races).
HOLD_BATCH = """
import sys, time
import lightning.pytorch as pl
from lightning_accel import cli
from lightning_accel.compare.interrupt import StopBetweenBatches

recipe, batch = sys.argv[1], int(sys.argv[2])

class HoldUntilStopRequested(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, _, batch_idx):
        held = trainer.logger is not None and trainer.logger.name == recipe + ".incomplete"
        if held and batch_idx == batch:
            (stop,) = [cb for cb in trainer.callbacks if isinstance(cb, StopBetweenBatches)]
            print("holding batch", batch, "of", recipe, flush=True)
            deadline = time.monotonic() + 300
            while not stop.request.requested and time.monotonic() < deadline:
                time.sleep(0.01)

make_config = cli._config
def config_with_hold(args):
    config = make_config(args)
    config.extra_trainer_kwargs = {"callbacks": [HoldUntilStopRequested()]}
    return config
cli._config = config_with_hold
sys.exit(cli.main(sys.argv[3:]))
"""


def interrupted_run(argv, recipe, batch, signum, process_group) -> tuple[int, str, str]:
    """Run `compare argv` in a child, send `signum` once it holds `batch` of `recipe`."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_BATCH, recipe, str(batch), "compare", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's job
    )
    out = []
    with selectors.DefaultSelector() as sel:
        sel.register(child.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and sel.select(timeout=deadline - time.monotonic()):
            line = child.stdout.readline()
            if not line:
                break
            out.append(line)
            if line.startswith("holding batch"):
                # Ctrl-C in a terminal signals the whole group (the loader workers too).
                (os.killpg if process_group else os.kill)(child.pid, signum)
                break
    try:
        rest, err = child.communicate(timeout=600)
    finally:
        child.kill()
    return child.returncode, "".join(out) + rest, err


@pytest.mark.slow
def test_ctrl_c_keeps_what_finished_and_the_same_command_trains_the_rest(tmp_path):
    data = make_image_folder(tmp_path / "data", n_train=3, n_val=2)
    logdir = tmp_path / "runs"
    argv = ["--data", str(data), "--recipes", "adam,sgd_cb", "--epochs", "2"]
    argv += ["--batch-size", "4", "--size", "32", "--presize", "40", "--num-workers", "1"]
    argv += ["--no-lr-find", "--logdir", str(logdir), *QUICK]
    status, out, err = interrupted_run(argv, "sgd_cb", 1, signal.SIGINT, process_group=True)
    assert status == 128 + signal.SIGINT, out + err
    assert err.strip().splitlines()[-1] == (
        "lightning-accel compare: stopped by SIGINT during sgd_cb; finished adam (summary in "
        f"{logdir / 'summary.csv'}); to train sgd_cb, run the command again with --logdir {logdir}"
    )
    assert "Traceback" not in err
    with open(logdir / "summary.csv") as f:
        assert [r["recipe"] for r in csv.DictReader(f)] == ["adam"]
    assert (logdir / "losses.png").exists() and (logdir / "accuracy.png").exists()
    # sgd_cb stopped at the end of the batch the signal arrived in (its second), before any
    # validation, and its run is not taken for a finished one.
    partial = scalars(logdir / "sgd_cb.incomplete")
    assert len(partial["chapter/train_loss"]) == 2 and "chapter/valid_loss" not in partial
    assert not (logdir / "sgd_cb").exists()
    adam_before = files_of(logdir / "adam")

    status, out = run_main(["compare", *argv])
    assert status == 0
    assert f"Kept from an earlier run in {logdir}: adam" in out
    assert list(epoch_tables(out)) == ["sgd_cb"]
    assert files_of(logdir / "adam") == adam_before
    assert not (logdir / "sgd_cb.incomplete").exists()
    with open(logdir / "summary.csv") as f:
        assert [r["recipe"] for r in csv.DictReader(f)] == ["adam", "sgd_cb"]
    adam_rows = json.loads((logdir / "adam" / "result.json").read_text())["rows"]

    # --force trains adam again from the same start: the same numbers, a new run in its place.
    status, out = run_main(["compare", *argv, "--recipes", "adam", "--force"])
    assert status == 0 and list(epoch_tables(out)) == ["adam"]
    assert files_of(logdir / "adam") != adam_before
    again = json.loads((logdir / "adam" / "result.json").read_text())["rows"]
    for new, old in zip(again, adam_rows):
        assert new["accuracy"] == old["accuracy"]
        assert new["valid_loss"] == pytest.approx(old["valid_loss"], rel=1e-6)
    with open(logdir / "summary.csv") as f:
        assert [r["recipe"] for r in csv.DictReader(f)] == ["adam", "sgd_cb"]


@pytest.mark.slow
def test_sigterm_stops_at_a_batch_boundary_and_writes_what_finished(tmp_path):
    logdir = tmp_path / "runs"
    argv = ["--recipes", "sgd_cb,momentum", "--epochs", "1", "--batch-size", "8"]
    argv += ["--size", "16", "--no-lr-find", "--logdir", str(logdir), *QUICK]
    status, out, err = interrupted_run(argv, "momentum", 0, signal.SIGTERM, process_group=False)
    assert status == 128 + signal.SIGTERM, out + err
    # Nothing else on stderr: no warnings, no traceback; the signal is acknowledged at once.
    assert err.strip().splitlines() == [
        "SIGTERM: stopping at the end of this batch (Ctrl-C again stops at once)",
        "lightning-accel compare: stopped by SIGTERM during momentum; finished sgd_cb (summary "
        f"in {logdir / 'summary.csv'}); to train momentum, run the command again with --logdir "
        f"{logdir}",
    ]
    with open(logdir / "summary.csv") as f:
        assert [r["recipe"] for r in csv.DictReader(f)] == ["sgd_cb"]
    assert len(scalars(logdir / "momentum.incomplete")["chapter/train_loss"]) == 1


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
    # Rank zero's report holds the accuracy over both ranks' validation images (2 x 2 x 8).
    assert float(row["accuracy"]) * 32 == pytest.approx(round(float(row["accuracy"]) * 32))
    assert scalars(logdir / "momentum")["chapter/accuracy"] == [float(row["accuracy"])]
