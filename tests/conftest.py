"""Suite-wide settings: quiet, deterministic, single-threaded torch per test worker."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from . import distributed  # noqa: E402

# Two xdist workers share two cores: one intra-op thread each avoids oversubscription.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def free_port() -> int:
    """A localhost port nobody listens on now (for servers and DDP rendezvous started by tests)."""
    return distributed.free_port()


@pytest.fixture
def ddp_port(monkeypatch) -> int:
    """A fresh rendezvous port for this test's DDP run, gone from the environment afterwards.

    Lightning's spawn and fork launchers write MASTER_PORT into the test process itself, so
    without this every later DDP test in the same worker would reuse a port picked long before.
    """
    port = distributed.free_port()
    monkeypatch.setenv("MASTER_PORT", str(port))
    return port
