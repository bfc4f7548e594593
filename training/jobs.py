"""End-to-end jobs shared by the CLI and the defaults: data -> train -> report card -> export -> publish."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnserve.training.data import DIGITS, DataSplit, load_dataset
from cnnserve.training.export import Exporter
from cnnserve.training.runs import configure_threads, resolve_device, seed_everything

logger = logging.getLogger(__name__)

DEFAULT_CLASSIFIER = "digits_cnn"


@dataclass(frozen=True)
class JobOptions:
    dataset: str = DIGITS  # "digits" or a folder root/<class>/<image>
    repository: Path = Path("model_repository")  # model repository to publish into
    name: str | None = None  # model name; default per model kind and dataset (digits_cnn, dcgan_digits, ...)
    out_dir: Path | None = None  # artefacts (checkpoints, PNGs, report.json); default runs/<name>/
    image_size: int = 16  # images are resized to image_size x image_size
    channels: int = 1  # 1 (grey) or 3 (RGB)
    epochs: int | None = None  # None: the model kind's default
    batch_size: int | None = None  # None: the model kind's default
    lr: float | None = None  # classifier: peak lr; GAN: generator lr. None: default
    seed: int = 0  # seeds everything; printed
    device: str = "cpu"  # torch device
    threads: int = 0  # torch intra-op threads; 0 = one per available core
    dry_run: bool = False  # one batch of one epoch, then report, export and publish as usual
    conditional: bool = False  # GAN: class-conditional
    judge: str | None = None  # GAN: classifier for the report card (path or model name); default digits_cnn
    exporter: Exporter = "torchscript"  # ONNX exporter, see training/export.py
    progress_bar: bool = True  # tqdm bar on a terminal (off when jobs run side by side)
    min_miou: float | None = None  # segmenter: refuse to publish below it; None: MIN_MIOU on digits, none on folders
    min_found: float | None = None  # segmenter: likewise for the share of digits found (MIN_FOUND)
    extra: dict[str, Any] = field(default_factory=dict)  # overrides of the training config's other fields
    model_extra: dict[str, Any] = field(default_factory=dict)  # GAN: overrides of the model preset (GanConfig)
    atlas: bool = True  # classifier: publish the neuron atlas (classifier/atlas.py); dry runs make a few-step one
    quantize: str | None = None  # classifier: then publish a gated "int8" or "fp16" variant (training/variants/make.py)


@dataclass(frozen=True)
class JobResult:
    name: str  # model name published
    version_dir: Path  # <repo>/<name>/<version>
    report: dict[str, Any]  # the report card
    seconds: float  # wall time of the whole job


def _defaults(options: JobOptions, kind: str, dataset_name: str) -> tuple[str, Path]:
    names = {"classifier": f"{dataset_name}_cnn", "gan": f"dcgan_{dataset_name}", "cgan": f"cdcgan_{dataset_name}",
             "segmenter": f"{dataset_name}_segmenter"}  # fmt: skip
    name = options.name or names[kind]
    return name, options.out_dir or Path("runs") / name


def _overrides(options: JobOptions) -> dict[str, Any]:
    chosen = {"epochs": options.epochs, "batch_size": options.batch_size, "lr": options.lr}
    return {k: v for k, v in chosen.items() if v is not None} | options.extra


def _setup(options: JobOptions) -> DataSplit:
    seed_everything(options.seed)
    threads = configure_threads(options.threads)
    resolve_device(options.device)
    logger.info("threads=%d device=%s dry_run=%s", threads, options.device, options.dry_run)
    return load_dataset(options.dataset, options.image_size, options.channels)
