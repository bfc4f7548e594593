"""The GAN kind as the registry sees it: its options and flags, its job (job.py, imported when it runs) and its
default models, dcgan_digits and cdcgan_digits, judged by the classifier kind's digits_cnn."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from cnnserve.training.kinds import DefaultModel, JobResult, TrainingKind
from cnnserve.training.options import DatasetOptions, add_dataset_arguments


@dataclass(frozen=True, kw_only=True)
class GanOptions(DatasetOptions):
    conditional: bool = False  # class-conditional generator and discriminator
    judge: str | None = None  # the report card's classifier (path or model name); None: digits_cnn, trained if absent
    lr_d: float | None = None  # discriminator learning rate; None: the preset's
    model_extra: dict[str, Any] = field(default_factory=dict)  # overrides of the model preset (GanConfig)

    def training_overrides(self) -> dict[str, Any]:
        lr_d = {"lr_d": self.lr_d} if self.lr_d is not None else {}
        return {**super().training_overrides(), **lr_d}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    parser.add_argument("--conditional", action="store_true", help="class-conditional generator and discriminator")
    parser.add_argument("--judge", help="classifier for the report card: model.onnx path or model name "
                        "(default: newest digits_cnn in the repository, trained first when absent)")  # fmt: skip
    parser.add_argument("--lr-d", type=float, help="discriminator learning rate (default per model)")


def run(options: GanOptions) -> JobResult:
    from cnnserve.training.gan.job import run_gan  # torch: imported when a job runs

    return run_gan(options)


KIND = TrainingKind(
    name="gan",
    help="train a DCGAN (or class-conditional DCGAN with --conditional)",
    options=GanOptions,
    add_arguments=add_arguments,
    run=run,
    defaults=(
        DefaultModel(GanOptions(name="dcgan_digits"), minutes=3.5),
        DefaultModel(GanOptions(name="cdcgan_digits", conditional=True), minutes=2.5),
    ),
)
