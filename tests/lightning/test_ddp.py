"""Cancel exceptions under real DDP (2 CPU processes, gloo): no hang, no desynchronization.

One `torchrun` launch runs every scenario of `ddp_scenarios.py` (each launch costs seconds).
In each, one rank raises a Cancel exception; the test checks that both ranks finish, end with
identical parameters equal to a hand-computed DDP SGD run, and that the raising rank saw the
chapter's event sequence while the other followed along without `after_cancel_*` events.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from ..loop.reference import CANCELS, Reference
from .ddp_scenarios import BS, LR, N_EPOCH, N_TRAIN, N_VALID, PLAIN, SCENARIOS, data

ROOT = Path(__file__).resolve().parents[2]


def _launch(out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    cmd += ["-m", "tests.lightning.ddp_scenarios", str(out)]
    # A hang is the failure this guards against: the timeout turns it into a test failure.
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for r in (0, 1):
        exit_report = json.loads((out / f"exit-rank{r}.json").read_text())
        assert exit_report["c10d_threads"] == [], f"rank {r} left threads running: {exit_report}"
    results = {}
    for name in SCENARIOS:
        results[name] = [json.loads((out / f"{name}-rank{r}.json").read_text()) for r in (0, 1)]
    return results


def _expected_params(reference: Reference | None, raising: int, accumulate: int) -> list:
    """DDP SGD by hand: each step averages the two ranks' gradients over the window."""
    train, _ = data()
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    steps = (
        reference.steps
        if reference is not None
        else Reference(N_EPOCH, N_TRAIN, N_VALID, accumulate).run().steps
    )

    def rank_grads(rank: int, epoch: int, i: int) -> list[torch.Tensor]:
        # Lightning gives the training loader a shuffling DistributedSampler (seed 0).
        sampler = DistributedSampler(train, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(epoch)
        idx = list(sampler)[i * BS : (i + 1) * BS]
        x, y = train.tensors[0][idx], train.tensors[1][idx]
        loss = nn.functional.mse_loss(model(x), y) / accumulate
        return list(torch.autograd.grad(loss, list(model.parameters())))

    grads = None
    for epoch, i, did_backward, did_step in steps:
        if i % accumulate == 0:
            grads = [torch.zeros_like(p) for p in model.parameters()]
        for rank in (0, 1):
            if rank != raising or did_backward:
                for g, new in zip(grads, rank_grads(rank, epoch, i)):
                    g += new / 2
        if did_step:
            with torch.no_grad():
                for p, g in zip(model.parameters(), grads):
                    p -= LR * g
    return [p.detach().tolist() for p in model.parameters()]


@pytest.mark.slow
def test_ddp_cancels(tmp_path):
    # One test for every scenario: a module-scoped fixture would launch once per xdist worker.
    results = _launch(tmp_path)
    for name in SCENARIOS:
        _check(name, results[name])


def _check(name: str, ranks: list[dict]) -> None:
    raising, kind, when, at, accumulate = SCENARIOS[name]
    assert ranks[0]["params"] == ranks[1]["params"], f"{name}: ranks ended in different states"

    reference = None
    if kind is not None:
        exc = CANCELS[kind]
        reference = Reference.raising(N_EPOCH, N_TRAIN, N_VALID, accumulate, exc, when, at).run()
        seq = reference.seq
        if name in PLAIN:  # a plain module has no after_pred/after_loss
            seq = [e for e in seq if e not in ("after_pred", "after_loss")]
        assert ranks[raising]["seq"] == seq, name
        follower = ranks[1 - raising]["seq"]
        assert not [e for e in follower if e.startswith("after_cancel")], name
        assert follower[0] == "before_fit" and follower[-1] == "after_fit", name
    else:
        plain = Reference(N_EPOCH, N_TRAIN, N_VALID).run().seq
        assert ranks[0]["seq"] == ranks[1]["seq"] == plain

    want = _expected_params(reference, raising, accumulate)
    for got, exp in zip(ranks[0]["params"], want):
        torch.testing.assert_close(
            torch.tensor(got), torch.tensor(exp), atol=1e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}"
        )
