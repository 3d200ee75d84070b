"""How every DDP run of the suite (2 CPU processes, gloo) starts and ends.

Lightning creates the gloo process group but never destroys it (it does for NCCL only, at exit).
A DDP process then exited with gloo's worker threads (`pt_gloo_runloop`), its socket loop
(`gloo_tcp_loop`) and, on rank 0, the TCPStore server thread (`pt_tcpstore_uv`) still running
while Python and then the C++ runtime tore the process down, with the other rank closing its
sockets at the same moment: the unsynchronised exit in which a CI run's rank 1 aborted
("terminate called without an active exception", SIGABRT). So each rank destroys its process
group when its work is over, which joins those threads, and checks that none is left.
"""

from __future__ import annotations

import os
import socket

import lightning.pytorch as pl
import torch.distributed as dist

C10D_THREADS = ("pt_gloo_runloop", "gloo_tcp_loop", "pt_tcpstore_uv")


def c10d_threads() -> list[str]:
    """Names of this process's live gloo / TCPStore threads, read from /proc (Linux only).

    torch names these threads in recent releases (2.14 does); torch 2.4 leaves them unnamed, and
    there this finds none whether they run or not.
    """
    if not os.path.isdir("/proc/self/task"):
        return []
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except FileNotFoundError:  # the thread ended while we looked
            continue
    return sorted(n for n in names if n in C10D_THREADS)


def release_process_group() -> list[str]:
    """Destroy this process's default process group, if any; return the c10d threads still alive."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return c10d_threads()


class ReleaseProcessGroup(pl.Callback):
    """Destroys the process group on each rank once `fit` is over, and fails if a thread survives.

    `teardown` runs after Lightning's own teardown and `on_fit_end`, when no collective is left.
    """

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        left = release_process_group()
        assert not left, f"rank {trainer.global_rank}: c10d threads alive after teardown: {left}"


def free_port() -> int:
    """A localhost port nobody listens on now (for servers and DDP rendezvous started by tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
