"""`lightning-accel compare` ends its DDP process group itself, on success and on error."""

import pytest
import torch.distributed as dist

from lightning_accel import cli, compare

from ..distributed import c10d_threads


def _join_a_process_group(port: int) -> None:
    """What a DDP run leaves behind: an initialized gloo group with its threads (one process)."""
    store = dist.TCPStore("127.0.0.1", port, world_size=1, is_master=True)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    assert dist.is_initialized()


@pytest.fixture
def _no_group_left_behind():
    """Whatever the test finds, the worker goes on without a process group."""
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.mark.usefixtures("_no_group_left_behind")
@pytest.mark.parametrize("outcome", ["success", "error"])
def test_main_destroys_the_process_group_a_run_leaves(tmp_path, monkeypatch, free_port, outcome):
    def run_compare(config):
        _join_a_process_group(free_port)
        if outcome == "error":
            raise compare.CompareError("no data")

    monkeypatch.setattr(compare, "run_compare", run_compare)
    status = cli.main(["compare", "--logdir", str(tmp_path / "runs"), "--no-progress-bar"])
    assert status == (0 if outcome == "success" else cli.USAGE_ERROR)
    assert not dist.is_initialized()
    assert c10d_threads() == []
