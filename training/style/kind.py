"""The style kind as the registry sees it: its options and flags, its job (job.py, imported when it runs) and its
default model, stylize_brushstrokes."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from cnnserve.training.kinds import DefaultModel, JobResult, TrainingKind
from cnnserve.training.options import EXPORTERS, RunOptions, add_run_arguments

DEFAULT_STYLE_MODEL = "stylize_brushstrokes"
PAINTED = "painted"  # --style value: the procedural brush-stroke painting (painting.py)
BUNDLED = "bundled"  # --content value: the photos scikit-image and scikit-learn ship (data.py)


@dataclass(frozen=True, kw_only=True)
class StyleOptions(RunOptions):
    style: str = PAINTED  # a style image file, or "painted"
    content: str = BUNDLED  # a folder of photos, or "bundled"
    steps: int | None = None  # optimiser steps; None: StyleTrainConfig's
    batch_size: int | None = None  # crops per step; None: StyleTrainConfig's
    lr: float | None = None  # Adam's peak learning rate; None: StyleTrainConfig's

    def model_name(self) -> str:
        """`name`, else stylize_brushstrokes for the painting, stylize_<the style file's stem> for a file."""
        return self.name or (DEFAULT_STYLE_MODEL if self.style == PAINTED else f"stylize_{Path(self.style).stem}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--style",
        default=PAINTED,
        help="style image file, or 'painted' (a procedural brush-stroke painting; the default)",
    )
    parser.add_argument(
        "--content",
        default=BUNDLED,
        help="folder of content photos, or 'bundled' (scikit-image's and scikit-learn's; default)",
    )
    add_run_arguments(parser)
    parser.add_argument("--name", help="model name (default: stylize_<style file name>, stylize_brushstrokes)")
    parser.add_argument("--steps", type=int, help="optimiser steps (default 180, ~2.5 min on one core)")
    parser.add_argument("--batch-size", type=int, help="crops per step (default 4)")
    parser.add_argument("--lr", type=float, help="Adam's peak learning rate (default 2e-3)")
    parser.add_argument("--out-dir", type=Path, help="artefacts: curves, before/after grid, report.json")
    parser.add_argument("--dry-run", action="store_true", help="one step, then report, export and publish")
    parser.add_argument("--exporter", choices=EXPORTERS, default="torchscript")


def run(options: StyleOptions) -> JobResult:
    from cnnserve.training.style.job import run_style  # torch: imported when a job runs

    return run_style(options)


KIND = TrainingKind(
    name="style",
    help="train a feed-forward style-transfer network (image to image)",
    options=StyleOptions,
    add_arguments=add_arguments,
    run=run,
    defaults=(DefaultModel(StyleOptions(name=DEFAULT_STYLE_MODEL), minutes=2.0),),
)
