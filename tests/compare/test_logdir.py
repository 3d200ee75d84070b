"""The comparison's folder: settings that must match, complete runs kept, nothing half-written."""

import json
import os
from pathlib import Path

import pytest

from lightning_accel.compare.errors import CompareError
from lightning_accel.compare.files import atomic_path, write_text
from lightning_accel.compare.logdir import RESULT_FILE, SETTINGS_FILE, ComparisonLog
from lightning_accel.compare.report import EpochRow, RecipeResult

SETTINGS = {"--data": "digits", "--epochs": 3, "--seed": 0, "--limit-batches": None}


def result(name: str, accuracy: float) -> RecipeResult:
    return RecipeResult(name, name, 0.5, [EpochRow(0, 1.0, 0.5, accuracy, 2.0)], [1.0])


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path):
    path = write_text(tmp_path / "summary.csv", "old\n")
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_text("half of the ne")
        raise KeyboardInterrupt
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["summary.csv"]  # no temporary file left behind


def test_settings_are_stored_once_and_other_settings_are_refused_by_name(tmp_path):
    log = ComparisonLog(tmp_path / "runs")
    log.check_settings(SETTINGS, ["adam"])  # a new folder: anything goes
    log.create(SETTINGS, ["adam"])
    assert json.loads((log.root / SETTINGS_FILE).read_text())["settings"] == SETTINGS
    log.check_settings(dict(SETTINGS), ["adam"])
    with pytest.raises(CompareError) as info:
        log.check_settings({**SETTINGS, "--epochs": 2, "--seed": 1}, ["adam"])
    assert str(info.value) == (
        f"--logdir: {log.root} holds a comparison made with --epochs 3 (this command: 2), "
        "--seed 0 (this command: 1); run with those settings to resume or add recipes, or "
        "choose another --logdir"
    )
    log.create({**SETTINGS, "--epochs": 2}, ["adam"])  # never overwrites the stored settings
    assert json.loads((log.root / SETTINGS_FILE).read_text())["settings"] == SETTINGS


def test_runs_without_settings_are_not_mixed_with_new_ones(tmp_path):
    (tmp_path / "runs" / "sgd").mkdir(parents=True)
    with pytest.raises(CompareError, match="holds runs for sgd but no compare.json"):
        ComparisonLog(tmp_path / "runs").check_settings(SETTINGS, ["adam", "sgd"])


def test_a_recipe_counts_as_complete_only_once_committed(tmp_path):
    log = ComparisonLog(tmp_path)
    staging = log.start("adam")
    staging.mkdir()
    (staging / "events.out.tfevents.1").write_text("partial")
    assert log.completed(["adam", "sgd"]) == {}
    assert log.start("adam") == staging and not staging.exists()  # leftovers dropped
    staging.mkdir()
    (staging / "events.out.tfevents.2").write_text("full")
    log.commit(result("adam", 0.75))
    assert not staging.exists()
    assert sorted(p.name for p in log.run_dir("adam").iterdir()) == [
        "events.out.tfevents.2",
        RESULT_FILE,
    ]
    assert log.completed(["sgd", "adam"]) == {"adam": result("adam", 0.75)}


def test_a_forced_rerun_replaces_the_old_run_only_when_it_is_complete(tmp_path):
    log = ComparisonLog(tmp_path)
    log.start("adam").mkdir()
    log.commit(result("adam", 0.75))
    log.start("adam").mkdir()  # --force: the new run trains beside the old one
    assert log.completed(["adam"])["adam"].accuracy == 0.75
    log.commit(result("adam", 0.5))
    assert log.completed(["adam"])["adam"].accuracy == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adam"]


def test_a_replacement_stopped_between_its_two_renames_is_finished(tmp_path):
    log = ComparisonLog(tmp_path)
    log.start("adam").mkdir()
    log.commit(result("adam", 0.75))
    log.run_dir("adam").rename(tmp_path / ".adam.replaced")  # the old run, moved aside
    assert log.completed(["adam"]) == {}
    log.create(SETTINGS, ["adam"])
    assert log.completed(["adam"])["adam"].accuracy == 0.75


def test_an_unreadable_result_is_named(tmp_path):
    log = ComparisonLog(tmp_path)
    log.run_dir("adam").mkdir()
    (log.run_dir("adam") / RESULT_FILE).write_text("{not json")
    with pytest.raises(CompareError, match=f"cannot read {tmp_path / 'adam' / RESULT_FILE}"):
        log.completed(["adam"])


def test_a_logdir_must_be_a_writable_folder(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    ComparisonLog(tmp_path / "new" / "runs").check_writable()
    assert sorted(os.listdir(tmp_path)) == ["afile"]  # checking wrote nothing
    with pytest.raises(CompareError, match="is a file, not a folder"):
        ComparisonLog(afile).check_writable()
    with pytest.raises(CompareError, match=f"cannot create {afile / 'x'}: {afile} is a file"):
        ComparisonLog(afile / "x").check_writable()
    with pytest.raises(CompareError, match="cannot create /proc/nope/runs: /proc is not writable"):
        ComparisonLog(Path("/proc/nope/runs")).check_writable()
