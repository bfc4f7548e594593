"""The classifier kind as the registry sees it: its options and flags, its job (job.py, imported when it runs) and
its default model, digits_cnn, trained before the others (it judges the GANs) with an INT8 variant after it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from cnnserve.contracts.variants import VARIANT_FORMATS
from cnnserve.training.kinds import DefaultModel, JobResult, TrainingKind
from cnnserve.training.options import DatasetOptions, add_dataset_arguments

DEFAULT_CLASSIFIER = "digits_cnn"


@dataclass(frozen=True, kw_only=True)
class ClassifierOptions(DatasetOptions):
    atlas: bool = True  # publish the neuron atlas (atlas.py); dry runs make a few-step one
    quantize: str | None = None  # then publish a gated "int8" or "fp16" variant (training/variants/)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    parser.add_argument("--no-atlas", dest="atlas", action="store_false",
                        help="publish without the neuron atlas (docs/atlas.md; it costs ~10-25 s)")  # fmt: skip
    parser.add_argument("--quantize", choices=VARIANT_FORMATS,
                        help="then publish a gated variant, <name>_int8 or <name>_fp16, calibrated on this run's "
                        "training side and gated on its validation side (docs/quantization.md)")  # fmt: skip


def run(options: ClassifierOptions) -> JobResult:
    from cnnserve.training.classifier.job import run_classifier  # torch: imported when a job runs

    return run_classifier(options)


KIND = TrainingKind(
    name="classifier",
    help="train the CNN classifier",
    options=ClassifierOptions,
    add_arguments=add_arguments,
    run=run,
    defaults=(DefaultModel(ClassifierOptions(name=DEFAULT_CLASSIFIER), minutes=0.3, first=True, variants=("int8",)),),
)
