"""How ranks agree under DDP: a Cancel raised on one rank applies on every rank.

Every rank must leave Lightning's loops at the same batch and skip the same optimizer steps, or
their collectives stop pairing up and the fit hangs. The bridge calls these at fixed points that
every rank reaches (the end of each batch, the start and end of each epoch, the start of the fit,
before each optimizer step); with one process they return their input unchanged.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

__all__ = ["AGREED_PARTS", "is_distributed", "agree_on_ended", "agree_on_skip"]

# The parts whose early end every rank must follow (batch, backward and step cancels only need
# the step skipped, which `agree_on_skip` handles).
AGREED_PARTS: tuple[str, ...] = ("validate", "train", "epoch", "fit")


def is_distributed(trainer: pl.Trainer | None) -> bool:
    """Whether `trainer` runs more than one process."""
    return trainer is not None and trainer.world_size > 1


def agree_on_ended(trainer: pl.Trainer, ended: set[str]) -> set[str]:
    """The parts ended on any rank (one all-reduce of four flags)."""
    if not is_distributed(trainer):
        return set(ended)
    flags = torch.tensor(
        [float(part in ended) for part in AGREED_PARTS], device=trainer.strategy.root_device
    )
    torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    return {part for part, flag in zip(AGREED_PARTS, flags.tolist()) if flag > 0}


def agree_on_skip(trainer: pl.Trainer, skip: bool) -> bool:
    """Whether any rank skips this optimizer step."""
    if not is_distributed(trainer):
        return skip
    return bool(trainer.strategy.reduce_boolean_decision(skip, all=False))
