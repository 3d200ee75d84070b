"""A tiny regression module and readers for the TensorBoard event files it leaves."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.data import DataLoader, TensorDataset

N_SAMPLES, BATCH = 32, 4  # 8 optimizer steps per epoch


class TinyRegression(pl.LightningModule):
    """Two linear layers; `configure` builds the optimizer (and optionally a scheduler)."""

    def __init__(self, configure=None):
        super().__init__()
        self.body = torch.nn.Linear(4, 8)
        self.head = torch.nn.Linear(8, 1)
        self._configure = configure

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        if self._configure is not None:
            return self._configure(self)
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def tiny_loader() -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N_SAMPLES, 4, generator=gen)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=BATCH)


def trainer_kwargs(tmp_path, **overrides) -> dict:
    kwargs = dict(
        max_epochs=1,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    kwargs.update(overrides)
    return kwargs


def read_events(log_dir) -> EventAccumulator:
    acc = EventAccumulator(
        str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> dict[int, float]:
    return {event.step: event.value for event in acc.Scalars(tag)}


def session_hparams(acc: EventAccumulator) -> dict[str, object]:
    """The hyper-parameters of the run's HParams session, as TensorBoard will show them."""
    content = acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    out = {}
    for name, value in info.hparams.items():
        kind = value.WhichOneof("kind")
        out[name] = getattr(value, kind)
    return out


def experiment_metrics(acc: EventAccumulator) -> list[str]:
    content = acc.SummaryMetadata("_hparams_/experiment").plugin_data.content
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    return [m.name.tag for m in experiment.metric_infos]
