"""The segmenter's job: digits scenes (or a mask folder) -> U-Net with a centre-heatmap head -> report card on
held-out scenes (refused below its floors) -> export (dynamic batch, height, width; parity at two sizes) -> publish."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from cnnserve.contracts import segmentation
from cnnserve.training.data import DIGITS
from cnnserve.training.export import ExportResult, ExportSpec, build_metadata, export_model, real_examples
from cnnserve.training.kinds import JobResult
from cnnserve.training.options import Exporter
from cnnserve.training.publish import model_config, publish
from cnnserve.training.report import announce, card
from cnnserve.training.runs import start, write_json
from cnnserve.training.segmenter.data import SegmenterData, load_segmenter_data
from cnnserve.training.segmenter.kind import SegmenterOptions
from cnnserve.training.segmenter.loop import SegmenterTrainConfig, train_segmenter
from cnnserve.training.segmenter.model import STRIDE, ExportedSegmenter, SegmenterConfig
from cnnserve.training.segmenter.report import (
    MIN_FOUND,
    MIN_MIOU,
    predict,
    refuse_below_floor,
    save_segmentation_grid,
    score_scenes,
    segmenter_checks,
)
from cnnserve.training.segmenter.scenes import Scenes

SEGMENTER_BATCH_SIZE = 32  # the server's max_batch_size: 32 scenes of 64 x 64 are ~6 MB of logits
SEGMENTER_MAX_PIXELS = 512 * 512
"""The largest scene (width x height) the server takes for the model, unless its own scenes are larger (a user's
folder): trained on 64 x 64 scenes (tested on 96 x 128) with digits 10 to 34 pixels wide and at most max_boxes (8)
found per scene, a 512 x 512 scene already holds more digits than it reports; one takes about 0.1 s on 2 CPU cores
(2048 x 2048: 2-3 s and 1.5 GB)."""
SEGMENTER_DYNAMIC_AXES = {
    "images": {2: "height", 3: "width"}, segmentation.MASK: {1: "height", 2: "width"},
    segmentation.LOGITS: {2: "height", 3: "width"},
}  # fmt: skip
# Parity: ONNX Runtime and PyTorch sum convolutions in other orders, so a near-tie can flip a pixel's argmax or
# two heat peaks' TopK order (which swaps whole rows of boxes, scores and classes) or push a score across the
# threshold. Allowed: 0.1% of mask pixels; 2% of box / score / class entries (a row in 50); boxes within 0.01 px.
SEGMENTER_TOLERANCES = {
    segmentation.MASK: (0.0, 1e-3), segmentation.CLASSES: (0.0, 0.02), segmentation.BOXES: (1e-2, 0.02),
    segmentation.SCORES: (1e-4, 0.02), segmentation.LOGITS: (1e-3, 0.0),
}  # fmt: skip


def run_segmenter(options: SegmenterOptions) -> JobResult:
    """Digits scenes (or a mask folder) -> U-Net with a centre-heatmap head -> report card -> export -> publish;
    refused below the floors unless a dry run."""
    started = time.monotonic()
    start(options)
    data = load_segmenter_data(options.dataset, options.seed, options.channels, options.dry_run)
    name = options.name or f"{data.name}_segmenter"
    out_dir = options.artefacts(name)
    model_cfg = SegmenterConfig(in_channels=data.channels, num_classes=len(data.classes))
    train_cfg = SegmenterTrainConfig(seed=options.seed, dry_run=options.dry_run, device=options.device,
                                     progress_bar=options.progress_bar, **options.training_overrides())  # fmt: skip
    run = train_segmenter(data.sample, data.val, model_cfg, train_cfg, out_dir, name)
    served = ExportedSegmenter(run.model).eval()
    test = score_scenes(served, data.test, model_cfg.num_classes)
    other = score_scenes(served, data.other, model_cfg.num_classes) if data.other is not None else None
    on_digits = data.name == DIGITS
    floors = (options.min_miou if options.min_miou is not None else MIN_MIOU if on_digits else None,
              options.min_found if options.min_found is not None else MIN_FOUND if on_digits else None)  # fmt: skip
    checks, metrics = segmenter_checks(test, other, *floors)
    metrics |= {"test_scenes": len(data.test), "steps": run.steps,
                "train_seconds": round(run.seconds, 1), "seed": options.seed, "dry_run": options.dry_run}  # fmt: skip
    report = card(name, checks, metrics)
    announce(report, publishing=options.dry_run)
    write_json(out_dir / "report.json", report)
    _save_test_grid(served, data.test, out_dir / "test_scenes.png")
    if not options.dry_run:
        refuse_below_floor(report)
    exported = _export_segmenter(served, name, data, model_cfg, report, options.exporter)
    parameters = {
        segmentation.STRIDE_PARAMETER: str(STRIDE), segmentation.MAX_BOXES_PARAMETER: str(model_cfg.max_boxes),
        segmentation.SCORE_THRESHOLD_PARAMETER: str(model_cfg.score_threshold), "task": segmentation.TASK,
        segmentation.OPTIONAL_OUTPUTS_PARAMETER: segmentation.optional_outputs_parameter([segmentation.LOGITS]),
    }  # fmt: skip
    config = model_config(name, exported.inputs, exported.outputs, parameters, labels_file=True,
                          preprocessing=_segmenter_preprocessing(data),
                          postprocessing=segmentation.postprocessing(), max_batch_size=SEGMENTER_BATCH_SIZE,
                          intra_op_threads=0)  # fmt: skip  # 0 (a thread per core): 2.7 vs 3.5 ms at 64x64, see docs
    version_dir = publish(options.repository, name, exported.model.SerializeToString(), config, data.classes)
    return JobResult(name, version_dir, report, time.monotonic() - started)


def _segmenter_preprocessing(data: SegmenterData) -> dict[str, Any]:
    """No height / width: the server pads a file bottom / right with 0 up to the stride and crops the answer back;
    it refuses a file larger than SEGMENTER_MAX_PIXELS or than the model's own test scenes, whichever is more."""
    height, width = data.test.images.shape[-2:]
    return {"input": "images", "input_format": "image", "channels": data.channels, "layout": "NCHW",
            "scale": 1.0 / 255.0, "resize": "pad", "stride": STRIDE,
            "max_pixels": max(SEGMENTER_MAX_PIXELS, height * width)}  # fmt: skip


def _export_segmenter(served: ExportedSegmenter, name: str, data: SegmenterData, model_cfg: SegmenterConfig,
                      report: dict[str, Any], exporter: Exporter) -> ExportResult:  # fmt: skip
    """Parity at two sizes: the test scenes' and, on digits, the other recipe's (96 x 128)."""
    height, width = data.test.images.shape[-2:]
    more = ((real_examples(data.other.images),),) if data.other is not None else ()
    spec = ExportSpec(
        name=name, input_names=("images",), output_names=segmentation.OUTPUTS,
        sample_inputs=lambda n, g: (torch.rand(n, data.channels, height, width, generator=g),),
        real_inputs=(real_examples(data.test.images),), more_real_inputs=more, exporter=exporter,
        dynamic_axes=SEGMENTER_DYNAMIC_AXES, output_tolerances=SEGMENTER_TOLERANCES,
    )  # fmt: skip
    metadata = build_metadata(
        data.classes,
        _segmenter_preprocessing(data),
        report,
        {"model_config": model_cfg.to_dict(), "postprocessing": segmentation.postprocessing()},
    )
    return export_model(served, spec, metadata)


def _save_test_grid(served: ExportedSegmenter, scenes: Scenes, path: Path, n: int = 24) -> None:
    boxes, _, classes, mask = predict(served, scenes.images[:n])
    save_segmentation_grid(scenes.images[:n].numpy(), mask.numpy(), boxes.numpy(), classes.numpy(),
                           rows=4, path=path)  # fmt: skip
