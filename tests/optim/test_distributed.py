"""Sharded (FSDP2) and data-parallel (DDP) training give the one-process result, for every recipe
and every impl; a sharded checkpoint resumes bit for bit; Lightning's ModelParallelStrategy works.

One launch of two real processes (gloo on CPU) runs every scenario of `distributed_scenarios.py`
(each launch costs seconds); the tests below read its results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from .distributed_scenarios import DCP_CASES, IMPLS, LIGHTNING_CASES, RECIPES

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-6  # largest difference of any weight, relative to the model's largest weight

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available(), reason="torch built without distributed"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("distributed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "tests.optim.distributed_scenarios", str(out)]
    # A hang (mismatched collectives) is a failure mode: the timeout turns it into a test failure.
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", list(RECIPES))
def test_fsdp2_gives_the_one_process_result(results, name, impl):
    """Uneven shards, an empty one; LAMB's and LARC's norms over the whole parameter."""
    assert results[f"fsdp/{name}/{impl}"] <= TOL


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", list(RECIPES))
def test_ddp_gives_the_one_process_result(results, name, impl):
    assert results[f"ddp/{name}/{impl}"] <= TOL


@pytest.mark.parametrize(("name", "impl"), DCP_CASES)
def test_a_sharded_checkpoint_resumes_bit_for_bit(results, name, impl):
    """Saved with torch.distributed.checkpoint on 2 ranks, loaded on 2 ranks into a fresh model
    and optimizer: the next steps give the same weights and optimizer state, bit for bit."""
    assert results[f"dcp/{name}/{impl}"] is True


@pytest.mark.parametrize(("name", "impl"), LIGHTNING_CASES)
def test_lightning_model_parallel_strategy_gives_the_one_process_result(results, name, impl):
    """fully_shard in configure_model, ModelParallelStrategy(data_parallel_size=2) on CPU."""
    assert results[f"lightning/{name}/{impl}"] <= TOL
