"""Training throughput: AccelModule + AccelOptimizer (Adam) against a plain Lightning AdamW loop.

Both contenders train the same randomly initialized ResNet on the same Imagenette-layout data
through the same `ImagenetteDataModule` (device-side augmentation), with the same Trainer settings;
only the module and optimizer differ. Runs alternate between the two, each run's images/s is
measured over the steps after a warm-up, and the medians and their ratio are reported.

On CUDA the defaults are the chapter's: 160 px images, 128 px crops, batch 128, `bf16-mixed` and
channels_last. On CPU, use small settings, e.g.

    python benchmarks/train_throughput.py --size 64 --presize 80 --batch-size 16 --steps 8

When `--data` is not given (or does not exist), Imagenette-sized JPEG folders are generated in a
temporary folder: 10 classes of 160x(160..240) images of noise with a class-dependent tint.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image
from torch import nn

from lightning_accel.module import AccelModule
from lightning_accel.optim.dispatch import IMPLS
from lightning_accel.optim.recipes import Adam
from lightning_accel.vision.imagenette import ImagenetteDataModule
from lightning_accel.vision.models import vision_model


def generate_imagenette_like(root: Path, n_train: int, n_val: int, presize: int) -> Path:
    """Imagenette-layout JPEG folders (10 classes), images `presize` high and up to 1.5x wide."""
    rng = np.random.default_rng(0)
    for split, count in (("train", n_train), ("val", n_val)):
        for label in range(10):
            folder = root / split / f"n{label:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                width = int(rng.integers(presize, presize * 3 // 2 + 1))
                tint = np.array([25 * label, 255 - 25 * label, 128])
                pixels = rng.normal(tint, 60, (presize, width, 3)).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"img_{i}.JPEG", quality=90)
    return root


def fused_adamw(params, lr: float, weight_decay: float = 0.01) -> torch.optim.Optimizer:
    """torch's fastest AdamW (one fused kernel), with the hyper-parameters of our Adam recipe."""
    return torch.optim.AdamW(
        params, lr=lr, betas=(0.9, 0.99), eps=1e-5, weight_decay=weight_decay, fused=True
    )


class PlainClassifier(pl.LightningModule):
    """The baseline: what a Lightning user writes by hand, with torch.optim.AdamW."""

    def __init__(
        self, model: nn.Module, lr: float, accel_opt: bool = False, impl: str = "auto"
    ) -> None:
        super().__init__()
        self.model, self.lr, self.accel_opt, self.impl = model, lr, accel_opt, impl
        self.loss_func = nn.CrossEntropyLoss()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss_func(self.model(x), y)
        self.log("train_loss", loss.detach())
        return loss

    def configure_optimizers(self):
        # Same split as AccelModule's defaults: no weight decay on biases and norm parameters.
        decay, no_decay = [], []
        for module in self.model.modules():
            for name, p in module.named_parameters(recurse=False):
                norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
                (no_decay if norm or name == "bias" else decay).append(p)
        if self.accel_opt:  # decomposition run: our optimizer without the bridge
            opt = Adam([decay, no_decay], lr=self.lr, impl=self.impl)
            for p in no_decay:
                opt.state[p]["do_wd"] = False
            return opt
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        return fused_adamw(groups, lr=self.lr)


class Throughput(pl.Callback):
    """Images per second over the training steps after `warmup`, timed on a synchronized device."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.images = 0
        self.start: float | None = None
        self.seconds = 0.0

    def _sync(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 == self.warmup:
            self._sync(pl_module)
            self.start = time.perf_counter()
        elif batch_idx + 1 > self.warmup:
            self.images += batch[0].shape[0]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        if self.start is not None:
            self.seconds = time.perf_counter() - self.start

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")


def run_once(kind: str, args: argparse.Namespace, data: Path, weights: dict) -> float:
    model = vision_model(args.arch, n_out=10)
    model.load_state_dict(weights)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if kind in ("plain", "plain+AccelOptimizer"):
        accel_opt = kind != "plain"
        module: pl.LightningModule = PlainClassifier(model, 1e-3, accel_opt, args.impl)
    else:
        opt_func = partial(Adam, impl=args.impl) if kind == "accel" else fused_adamw
        module = AccelModule(model, nn.CrossEntropyLoss(), opt_func=opt_func, lr=1e-3, wd=0.01)
        _quiet_recorder(module)
    dm = ImagenetteDataModule(
        presize=args.presize,
        size=args.size,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        data_dir=data,
        channels_last=args.channels_last,
        progress=False,
    )
    meter = Throughput(args.warmup)
    trainer = pl.Trainer(
        accelerator=args.accelerator,
        devices=1,
        precision=args.precision,
        max_epochs=1,
        limit_train_batches=args.warmup + args.steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[meter],
        default_root_dir=tempfile.gettempdir(),
    )
    torch.manual_seed(0)
    trainer.fit(module, datamodule=dm)
    return meter.images_per_second


def _quiet_recorder(module: AccelModule) -> None:
    # The bridge's Recorder prints a table per epoch; a benchmark wants only its own output.
    recorder = getattr(module.bridge.learn, "recorder", None)
    if recorder is not None and hasattr(recorder, "print_table"):
        recorder.print_table = False


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpus = torch.get_num_threads()
    return f"{platform.processor() or platform.machine()} CPU, {cpus} torch threads"


def main(argv: list[str] | None = None) -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="Imagenette-layout folder (default: generated)")
    parser.add_argument("--arch", default="resnet34")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--presize", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender")
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--precision", default="bf16-mixed" if cuda else "32-true")
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=cuda,
        help="default: on with CUDA",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--impl",
        default="auto",
        choices=IMPLS,
        help="AccelOptimizer executor (default: auto)",
    )
    parser.add_argument(
        "--decompose",
        action="store_true",
        help="also time each half alone: our optimizer without the bridge, the bridge with AdamW",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None or not data.exists():
            n_train = (args.warmup + args.steps) * args.batch_size
            print(f"Generating {n_train} training images in {tmp} ...", file=sys.stderr)
            data = generate_imagenette_like(Path(tmp) / "data", n_train // 10 + 1, 2, args.presize)
        torch.manual_seed(0)
        weights = vision_model(args.arch, n_out=10).state_dict()
        kinds = ["plain", "accel"]
        if args.decompose:
            kinds += ["plain+AccelOptimizer", "AccelModule+AdamW"]
        rates: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(args.repeats):  # alternate, so load changes hit both alike
            for kind in rates:
                rates[kind].append(run_once(kind, args, data, weights))
                print(f"{kind}: {rates[kind][-1]:.1f} images/s", file=sys.stderr)

    medians = {kind: statistics.median(values) for kind, values in rates.items()}
    print(
        f"\n{args.arch}, {args.size} px crops from {args.presize} px, batch {args.batch_size}, "
        f"{args.precision}, channels_last={args.channels_last}, {args.steps} timed steps after "
        f"{args.warmup}, median of {args.repeats} runs each, AccelOptimizer impl={args.impl}, "
        f"on {machine()}\n"
    )
    labels = {
        "plain": "Lightning + torch.optim.AdamW (fused)",
        "accel": "AccelModule + AccelOptimizer Adam",
        "plain+AccelOptimizer": "Lightning + AccelOptimizer Adam (no bridge)",
        "AccelModule+AdamW": "AccelModule + torch.optim.AdamW (fused)",
    }
    print("| contender | images/s (median) | runs | relative |")
    print("|---|---|---|---|")
    for kind, values in rates.items():
        runs = ", ".join(f"{r:.1f}" for r in values)
        ratio = medians[kind] / medians["plain"]
        print(f"| {labels[kind]} | {medians[kind]:.1f} | {runs} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
