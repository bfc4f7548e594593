"""A training kind defined outside training/, as a user's own package would define one (docs/training-kinds.md): a
linear classifier of scikit-learn's 8 x 8 digits, `cnnserve train tiny`. It declares itself in one TrainingKind,
takes the shared run flags plus its own `--steps`, and builds its job from training's shared pieces: the start of
a run, the dataset, the report card, export with its parity check, and publishing. The server serves what it
publishes with its classification kind.

Registered by tests/training/test_kinds.py as an installed plug-in would be (an entry point in the group
cnnserve.training_kinds) and by dotted path (`cnnserve train --kind tests.training.tiny_kind:KIND tiny`).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from cnnserve.training.kinds import JobResult, TrainingKind
from cnnserve.training.options import RunOptions, add_run_arguments

NAME = "tiny_digits"
SIDE = 8  # the digits' own size: no resize


@dataclass(frozen=True, kw_only=True)
class TinyOptions(RunOptions):
    steps: int = 40  # full-batch Adam steps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--name", help=f"model name (default {NAME})")
    parser.add_argument("--out-dir", type=Path, help="where report.json goes (default runs/<name>/)")
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps (default 40)")
    parser.add_argument("--dry-run", action="store_true", help="one step")


def run(options: TinyOptions) -> JobResult:
    # torch and the job's pieces are imported here, when a job runs, as the built-in kinds do
    import torch
    from torch import nn
    from torch.nn import functional

    from cnnserve.training.data import load_dataset
    from cnnserve.training.export import ExportSpec, build_metadata, export_model
    from cnnserve.training.publish import model_config, publish
    from cnnserve.training.report import announce, card, check
    from cnnserve.training.runs import start, write_json

    started = time.monotonic()
    start(options)
    split = load_dataset("digits", image_size=SIDE)
    name = options.name or NAME
    out_dir = options.artefacts(name)
    model = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, len(split.classes)))  # [N, 1, 8, 8] -> [N, 10]
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(1 if options.dry_run else options.steps):
        loss = functional.cross_entropy(model(split.train.images), split.train.labels)
        optimiser.zero_grad()
        torch.autograd.backward(loss)
        optimiser.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(split.val.images).argmax(1) == split.val.labels).float().mean())
    preprocessing = {"input": "images", "input_format": "image", "height": SIDE, "width": SIDE, "channels": 1,
                     "layout": "NCHW", "scale": 1.0 / 255.0}  # fmt: skip
    spec = ExportSpec(
        name=name, input_names=("images",), output_names=("logits",),
        sample_inputs=lambda n, g: (torch.rand(n, 1, SIDE, SIDE, generator=g),),
        real_inputs=(split.val.images[:7],), exporter=options.exporter,
    )  # fmt: skip
    report = card(name, [check("val_accuracy", accuracy, 0.5)], {"steps": options.steps, "seed": options.seed})
    exported = export_model(model, spec, build_metadata(split.classes, preprocessing, report, {}))
    report["metrics"]["parity_max_abs_diff"] = exported.max_difference  # export_model refuses a model past 1e-4
    announce(report)
    write_json(out_dir / "report.json", report)
    config = model_config(name, exported.inputs, exported.outputs, {"task": "classification"}, labels_file=True,
                          label_output="logits", preprocessing=preprocessing)  # fmt: skip
    version_dir = publish(options.repository, name, exported.model.SerializeToString(), config, split.classes)
    return JobResult(name, version_dir, report, time.monotonic() - started)


KIND = TrainingKind(
    name="tiny",
    help="train a linear classifier of 8 x 8 digits (a kind from outside training/)",
    options=TinyOptions,
    add_arguments=add_arguments,
    run=run,
)
