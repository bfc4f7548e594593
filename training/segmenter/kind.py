"""The segmenter kind as the registry sees it: its options and flags, its job (job.py, imported when it runs) and
its default model, digits_segmenter."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from cnnserve.training.kinds import DefaultModel, JobResult, TrainingKind
from cnnserve.training.options import DatasetOptions, add_dataset_arguments


@dataclass(frozen=True, kw_only=True)
class SegmenterOptions(DatasetOptions):
    min_miou: float | None = None  # refuse to publish below it; None: MIN_MIOU on digits, none on folders
    min_found: float | None = None  # likewise for the share of digits found; None: MIN_FOUND on digits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser, "'digits' (scenes of sklearn's digits, offline) or a folder with images/, masks/, "
                          "classes.txt")  # fmt: skip
    parser.add_argument("--min-miou", type=float, help="refuse to publish below this test mIoU "
                        "(default 0.80 on digits, none on folders; dry runs never refuse)")  # fmt: skip
    parser.add_argument("--min-found", type=float, help="refuse to publish below this share of test objects "
                        "found (default 0.90 on digits, none on folders)")  # fmt: skip


def run(options: SegmenterOptions) -> JobResult:
    from cnnserve.training.segmenter.job import run_segmenter  # torch: imported when a job runs

    return run_segmenter(options)


KIND = TrainingKind(
    name="segmenter",
    help="train the U-Net segmenter with in-graph boxes",
    options=SegmenterOptions,
    add_arguments=add_arguments,
    run=run,
    defaults=(DefaultModel(SegmenterOptions(name="digits_segmenter"), minutes=3.0),),
)
