"""Vision data modules and models for reproducing the chapter."""

from .augment import BatchAugment
from .digits import DigitsDataModule
from .download import ArchiveSource, DatasetUnavailableError, fetch_dataset
from .imagenette import ImagenetteDataModule
from .models import ConcatPool2d, VisionModel, reference_head, vision_model, vision_splitter

__all__: list[str] = [
    "ArchiveSource",
    "BatchAugment",
    "ConcatPool2d",
    "DatasetUnavailableError",
    "DigitsDataModule",
    "ImagenetteDataModule",
    "VisionModel",
    "fetch_dataset",
    "reference_head",
    "vision_model",
    "vision_splitter",
]
