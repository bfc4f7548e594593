"""The options every kind's job shares and their flags: where it publishes and writes its artefacts, seed, device,
threads, dry run, exporter (RunOptions); and, for kinds that train on a labelled image dataset, the dataset, image
size, channels and the loop's length, batch and learning rate (DatasetOptions).

Torch-free: `cnnserve train` builds every kind's flags from here before any job imports torch.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Self

from cnnserve.training.image_sources import DIGITS

Exporter = Literal["torchscript", "dynamo"]  # export.py says what each costs
EXPORTERS: tuple[Exporter, ...] = ("torchscript", "dynamo")
RUNS = Path("runs")
"""Where a run writes its artefacts unless told: runs/<model name>/."""


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What every job takes alike; a kind's options subclass it and add their own fields."""

    repository: Path = Path("model_repository")  # the model repository it publishes into
    name: str | None = None  # the model's name there; None: the kind's default (digits_cnn, dcgan_digits, ...)
    out_dir: Path | None = None  # artefacts (checkpoints, PNGs, report.json); None: runs/<name>/
    seed: int = 0  # seeds everything; printed
    device: str = "cpu"  # torch device
    threads: int = 0  # torch intra-op threads; 0: one per available core
    dry_run: bool = False  # a smoke test: one batch (or step), then report, export and publish as usual
    exporter: Exporter = "torchscript"  # the ONNX exporter (export.py)
    progress_bar: bool = True  # a tqdm bar on a terminal (off when jobs run side by side)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        """The options a command line gave: each field from the flag whose dest is its name (`--model-repository`
        gives `repository`); a field no flag names keeps its default."""
        given = vars(args)
        if "model_repository" in given:
            given = {**given, "repository": given["model_repository"]}
        return cls(**{f.name: given[f.name] for f in fields(cls) if f.name in given})

    def artefacts(self, name: str) -> Path:
        """The run's folder, created: out_dir, else runs/<name>/."""
        folder = self.out_dir or RUNS / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """What every training command takes alike: where it publishes, its seed, device and threads."""
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"), help="where to publish")
    parser.add_argument("--seed", type=int, default=0, help="seeds everything (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: one per available core)")


@dataclass(frozen=True, kw_only=True)
class DatasetOptions(RunOptions):
    """A job that trains on a labelled image dataset for a number of epochs (classifier, GAN, segmenter)."""

    dataset: str = DIGITS  # "digits" or a folder (root/<class>/<image>; the segmenter's: images/, masks/)
    image_size: int = 16  # images are resized to image_size x image_size
    channels: int = 1  # 1 (grey) or 3 (RGB)
    epochs: int | None = None  # None: the kind's default
    batch_size: int | None = None  # None: the kind's default
    lr: float | None = None  # classifier: peak lr; GAN: generator lr. None: the kind's default
    extra: dict[str, Any] = field(default_factory=dict)  # overrides of the training config's other fields

    def training_overrides(self) -> dict[str, Any]:
        """The training config's fields these options set: epochs, batch size and lr when given, and `extra`."""
        chosen = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}
        return {k: v for k, v in chosen.items() if v is not None} | self.extra


def add_dataset_arguments(
    parser: argparse.ArgumentParser,
    dataset_help: str = "'digits' (sklearn's, offline) or a folder root/<class>/<image>",
) -> None:
    """DatasetOptions' flags, the run's among them."""
    parser.add_argument("--dataset", default=DIGITS, help=dataset_help)
    add_run_arguments(parser)
    parser.add_argument("--name", help="model name in the repository (default: digits_cnn, dcgan_digits, ...)")
    parser.add_argument("--epochs", type=int, help="passes over the training split (default per model)")
    parser.add_argument("--batch-size", type=int, help="images per step (default per model)")
    parser.add_argument("--lr", type=float, help="learning rate (classifier: peak; GAN: generator) (default per model)")
    parser.add_argument("--out-dir", type=Path, help="artefacts: checkpoints, PNGs, report.json (default runs/<name>/)")
    parser.add_argument("--dry-run", action="store_true", help="one batch of one epoch, then export and publish")
    parser.add_argument("--image-size", type=int, default=16, help="images are resized to this square size")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=1, help="1 grey or 3 RGB (folders)")
    parser.add_argument("--exporter", choices=EXPORTERS, default="torchscript",
                        help="ONNX exporter (default torchscript: ~0.1 s a model; dynamo: ~3 s)")  # fmt: skip


def available_cores() -> int:
    """The cores this process may run on: what `threads=0` gives a thread each."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
