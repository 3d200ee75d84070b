"""A real `tensorboard --logdir` server shows what the monitor wrote: runs, scalar tags, values
and the HParams experiment, read through its HTTP data API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from lightning_accel.compare import CompareConfig, run_compare

START_TIMEOUT_S = 90  # a cold start imports TensorFlow-free TensorBoard: seconds, bounded


def _request(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "X-TensorBoard-Feature-Flags": "{}"}
    with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=10) as reply:
        return json.loads(reply.read())


def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError) as error:
            last_error = error
        time.sleep(0.5)
    pytest.fail(f"TensorBoard did not show {what} within {timeout_s}s (last error: {last_error})")


@pytest.fixture
def compare_logdir(tmp_path):
    """A tiny `lightning-accel compare` (SGD and Adam); compare puts the monitor in every fit."""
    config = CompareConfig(
        arch="resnet18",
        epochs=1,
        size=16,
        batch_size=8,
        limit_batches=2,
        recipes=("sgd", "adam"),
        lr_find=False,
        progress_bar=False,
        accelerator="cpu",
        precision="32-true",
        logdir=tmp_path / "compare",
        monitor_every=1,
    )
    run_compare(config, echo=lambda text: None)
    return config.logdir


@pytest.mark.slow
def test_a_live_tensorboard_serves_the_runs_tags_and_hparams(compare_logdir, free_port):
    port = free_port
    command = [
        sys.executable,
        "-m",
        "tensorboard.main",
        f"--logdir={compare_logdir}",
        "--host=127.0.0.1",
        f"--port={port}",
        "--load_fast=false",  # the pure-Python reader: no Rust data server to download
        "--reload_interval=1",
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        runs = _wait_for(
            lambda: set(_request(f"{base}/data/runs")) >= {"sgd", "adam"},
            START_TIMEOUT_S,
            "both runs",
        )
        assert runs
        tags = _request(f"{base}/data/plugin/scalars/tags")
        for run in ("sgd", "adam"):
            run_tags = set(tags[run])
            # compare's own chapter table, and the monitor's curves, side by side.
            assert {"chapter/train_loss", "chapter/accuracy", "hypers/lr/group0"} <= run_tags
            for stat in ("grad_norm", "update_ratio", "step_size"):
                assert any(t.startswith(f"{stat}/") for t in run_tags), (run, stat)
        # Only Adam keeps a squared-gradient average; compare's SGD runs without momentum.
        assert any(t.startswith("sqr_avg_sqrt_mean/") for t in tags["adam"])
        assert not any(t.startswith(("sqr_avg_sqrt_mean/", "grad_avg_norm/")) for t in tags["sgd"])

        points = _request(f"{base}/data/plugin/scalars/scalars?run=sgd&tag=hypers/mom/group0")
        assert [step for _, step, _ in points] == [0, 1]
        assert all(value == 0.0 for _, _, value in points)  # moms=(0, 0, 0), as the chapter

        experiment = _request(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
        hparam_names = {info["name"] for info in experiment["hparamInfos"]}
        assert {"optimizer", "optimizer.lr", "max_epochs", "recipe"} <= hparam_names
        metric_tags = {info["name"]["tag"] for info in experiment["metricInfos"]}
        # The final validation loss and accuracy, which compare asks the monitor for.
        assert {"final/valid_loss", "final/accuracy"} <= metric_tags
        groups = _request(
            f"{base}/data/plugin/hparams/session_groups",
            {
                "experimentName": "",
                "allowedStatuses": ["STATUS_SUCCESS", "STATUS_UNKNOWN"],
                "colParams": [],
                "startIndex": 0,
                "sliceSize": 10,
            },
        )
        assert {g["name"] for g in groups["sessionGroups"]} >= {"sgd", "adam"}
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    assert server.returncode is not None
