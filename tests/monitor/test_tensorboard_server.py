"""A real `tensorboard --logdir` server shows what the monitor wrote: runs, scalar tags, values
and the HParams experiment, read through its HTTP data API."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_accel.monitor import OptimizerStatsMonitor
from lightning_accel.optim.recipes import SGD, Adam

from .helpers import TinyRegression, tiny_loader, trainer_kwargs

START_TIMEOUT_S = 90  # a cold start imports TensorFlow-free TensorBoard: seconds, bounded


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
def two_recipe_logdir(tmp_path):
    """Two monitored runs, one per recipe, as `lightning-accel compare` lays them out."""
    logdir = tmp_path / "logs"
    recipes = {
        "sgd": lambda m: SGD(m.parameters(), lr=0.05, mom=0.9),
        "adam": lambda m: Adam(m.parameters(), lr=0.01),
    }
    for name, configure in recipes.items():
        torch.manual_seed(0)
        trainer = pl.Trainer(
            **trainer_kwargs(tmp_path, log_every_n_steps=2),
            logger=TensorBoardLogger(logdir, name=name, version=0),
            callbacks=[OptimizerStatsMonitor(hparams={"recipe": name})],
        )
        trainer.fit(TinyRegression(configure), tiny_loader())
    return logdir


@pytest.mark.slow
def test_a_live_tensorboard_serves_the_runs_tags_and_hparams(two_recipe_logdir):
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "tensorboard.main",
        f"--logdir={two_recipe_logdir}",
        "--host=127.0.0.1",
        f"--port={port}",
        "--load_fast=false",  # the pure-Python reader: no Rust data server to download
        "--reload_interval=1",
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        runs = _wait_for(
            lambda: set(_request(f"{base}/data/runs")) >= {"sgd/version_0", "adam/version_0"},
            START_TIMEOUT_S,
            "both runs",
        )
        assert runs
        tags = _request(f"{base}/data/plugin/scalars/tags")
        for run in ("sgd/version_0", "adam/version_0"):
            run_tags = set(tags[run])
            assert {"hypers/lr/group0", "grad_norm/body", "update_ratio/head"} <= run_tags
        # Only Adam keeps a squared-gradient average; SGD with momentum keeps grad_avg.
        assert "sqr_avg_sqrt_mean/body" in tags["adam/version_0"]
        assert "sqr_avg_sqrt_mean/body" not in tags["sgd/version_0"]
        assert "grad_avg_norm/body" in tags["sgd/version_0"]

        points = _request(
            f"{base}/data/plugin/scalars/scalars?run=adam/version_0&tag=hypers/lr/group0"
        )
        assert [step for _, step, _ in points] == [1, 3, 5, 7]
        assert all(value == pytest.approx(0.01) for _, _, value in points)

        experiment = _request(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
        hparam_names = {info["name"] for info in experiment["hparamInfos"]}
        assert {"recipe", "optimizer", "optimizer.lr"} <= hparam_names
        metric_tags = {info["name"]["tag"] for info in experiment["metricInfos"]}
        assert "final/train_loss" in metric_tags
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    assert server.returncode is not None
