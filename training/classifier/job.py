"""The classifier's job: digits or a class folder -> CNN -> report card (accuracy, SVC baseline) -> export (pixels
in, every conv block's maps as optional outputs) -> publish with the neuron atlas; then, when asked, a gated
INT8 / FP16 variant calibrated on this run's own split."""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from cnnserve.contracts import features, segmentation
from cnnserve.training.classifier.atlas import AtlasConfig, build_atlas
from cnnserve.training.classifier.kind import ClassifierOptions
from cnnserve.training.classifier.loop import ClassifierRun, ClassifierTrainConfig, train_classifier
from cnnserve.training.classifier.model import ClassifierConfig, PixelClassifier
from cnnserve.training.classifier.report import classifier_checks, svc_baseline
from cnnserve.training.data import DataSplit, load_dataset
from cnnserve.training.export import ExportSpec, build_metadata, export_model, real_examples
from cnnserve.training.kinds import JobResult
from cnnserve.training.publish import model_config, publish, small_image_threads
from cnnserve.training.report import announce, card
from cnnserve.training.runs import start, write_json

CLASSIFIER_LATENCY_BUDGET_MS = 50
"""dynamic_batching.latency_budget_ms of published classifiers: what a 2-core machine holds for the digits CNN (a
full batch of 128 runs in a few ms), the bound the server promises for its queue and batch (docs/latency-budget.md)."""
ATLAS_DRY_RUN_STEPS = 2


def run_classifier(options: ClassifierOptions) -> JobResult:
    started = time.monotonic()
    start(options)
    split = load_dataset(options.dataset, options.image_size, options.channels)  # the split's seed: always 0
    name = options.name or f"{split.name}_cnn"
    out_dir = options.artefacts(name)
    model_cfg = ClassifierConfig(in_channels=split.channels, image_size=split.image_size,
                                 num_classes=len(split.classes))  # fmt: skip
    train_cfg = ClassifierTrainConfig(seed=options.seed, dry_run=options.dry_run, device=options.device,
                                      progress_bar=options.progress_bar, **options.training_overrides())  # fmt: skip
    run = train_classifier(split, model_cfg, train_cfg, out_dir)
    svc_accuracy = svc_baseline(split)
    print(f"validation accuracy: CNN {run.val_accuracy:.4f}"
          + (f", SVC baseline {svc_accuracy:.4f}" if svc_accuracy is not None else ""))  # fmt: skip
    metrics = {
        "val_accuracy": round(run.val_accuracy, 6), "svc_val_accuracy": svc_accuracy,
        "val_items": len(split.val), "train_items": len(split.train), "epochs": len(run.history["val_loss"]),
        "train_seconds": round(run.seconds, 1), "seed": options.seed, "dry_run": options.dry_run,
    }  # fmt: skip
    report = card(name, classifier_checks(split, run.val_accuracy, svc_accuracy), metrics)
    announce(report)
    write_json(out_dir / "report.json", report)
    # The pixel contract: the graph takes [0, 1] pixels and normalises them itself, so the hints say only what
    # happens before the tensor (resize, channels, layout, scale); mean/std live in the graph (and, for the record,
    # in the ONNX metadata as `normalisation`).
    preprocessing = {
        "input": "images", "input_format": "image", "height": split.image_size, "width": split.image_size,
        "channels": split.channels, "layout": "NCHW", "scale": 1.0 / 255.0,
    }  # fmt: skip
    real = real_examples(torch.cat([split.val.images, split.train.images]))
    # Every conv block's activations are optional outputs after the logits: free unless a request names them.
    exported_module = PixelClassifier(run.model, run.mean, run.std, with_features=True)
    feature_names = exported_module.feature_names(real[:1])
    spec = ExportSpec(
        name=name, input_names=("images",), output_names=("logits", *feature_names),
        sample_inputs=lambda n, g: (torch.rand(n, split.channels, split.image_size, split.image_size, generator=g),),
        real_inputs=(real,), exporter=options.exporter,
    )  # fmt: skip
    extra = {"model_config": model_cfg.to_dict(), "normalisation": {"mean": run.mean, "std": run.std}}
    metadata = build_metadata(split.classes, preprocessing, report, extra)
    exported = export_model(exported_module, spec, metadata)
    parameters = {
        "task": "classification",
        segmentation.OPTIONAL_OUTPUTS_PARAMETER: segmentation.optional_outputs_parameter(feature_names),
        features.FEATURE_OUTPUTS_PARAMETER: features.feature_outputs_parameter(feature_names),
    }
    atlas = _atlas(run, split, name, options) if options.atlas else {}
    if atlas:
        parameters[features.ATLAS_PARAMETER] = f"{features.ATLAS_DIR}/{features.ATLAS_INDEX}"
    config = model_config(name, exported.inputs, exported.outputs, parameters, labels_file=True,
                          label_output="logits", preprocessing=preprocessing,
                          intra_op_threads=small_image_threads(split.image_size),
                          latency_budget_ms=CLASSIFIER_LATENCY_BUDGET_MS)  # fmt: skip
    version_dir = publish(options.repository, name, exported.model.SerializeToString(), config, split.classes,
                          extra_files=atlas)  # fmt: skip
    if options.quantize is not None:
        _publish_variant(options, name, split)
    return JobResult(name, version_dir, report, time.monotonic() - started)


def _publish_variant(options: ClassifierOptions, name: str, split: DataSplit) -> None:
    """The variant of the model just published, calibrated on this run's training side and gated on its validation
    side; GateRefused (the model itself stays published) when a gate refuses."""
    from cnnserve.training.variants.calibration import split_images
    from cnnserve.training.variants.make import VariantOptions, make_variant

    images = split_images(split, seed=0)  # the split's own seed: load_dataset's default, as above
    variant = make_variant(options.repository, name, images, VariantOptions(variant_format=options.quantize or "int8"))
    print(f"published {variant.name} -> {variant.version_dir}")


def _atlas(run: ClassifierRun, split: DataSplit, name: str, options: ClassifierOptions) -> dict[str, bytes]:
    """The atlas files; a dry run's takes a few steps, so the smoke test still writes every file."""
    config = AtlasConfig(seed=options.seed)
    if options.dry_run:
        config = replace(config, steps=ATLAS_DRY_RUN_STEPS)
    return build_atlas(run.model, run.mean, run.std, split.val, split.classes, name, config)
