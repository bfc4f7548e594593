"""End-to-end jobs shared by the CLI and the defaults: data -> train -> report card -> export -> publish."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from cnnserve.contracts import features, generation, segmentation
from cnnserve.training.atlas import AtlasConfig, build_atlas
from cnnserve.training.data import DIGITS, DataSplit, load_dataset
from cnnserve.training.export import (
    Exporter,
    ExportSpec,
    PixelClassifier,
    PixelGenerator,
    build_metadata,
    export_model,
    real_examples,
)
from cnnserve.training.gan_evaluation import GanEvaluator, real_fid_floor
from cnnserve.training.models.classifier import ClassifierConfig
from cnnserve.training.models.dcgan import GanConfig
from cnnserve.training.publish import latest_model, model_config, publish
from cnnserve.training.report import Check, Judge, announce, card, classifier_checks, svc_baseline
from cnnserve.training.runs import configure_threads, resolve_device, seed_everything, write_json
from cnnserve.training.train_classifier import ClassifierRun, ClassifierTrainConfig, train_classifier
from cnnserve.training.train_gan import GanTrainConfig, generate, save_truncation_grid, train_gan

logger = logging.getLogger(__name__)

SMALL_IMAGE_PIXELS = 32 * 32
"""Models of images up to this size run each operator on one ONNX Runtime thread (intra_op_threads 1): their
operators are too small to split across cores. Measured on the digits CNN (16 x 16) on 2 cores, server CPU per
request at 32 clients fell from 0.65 to 0.56 ms and one-client p50 from 1.38 to 1.07 ms (docs/benchmarks.md)."""

DEFAULT_CLASSIFIER = "digits_cnn"
CLASSIFIER_LATENCY_BUDGET_MS = 50
"""dynamic_batching.latency_budget_ms of published classifiers: what a 2-core machine holds for the digits CNN (a
full batch of 128 runs in a few ms), the bound the server promises for its queue and batch (docs/latency-budget.md)."""
ATLAS_DRY_RUN_STEPS = 2

# Measured on digits (2 shared cores; 1,000 samples judged by the digits classifier; figures in the report). Both
# GANs make 8 x 8 digits (the data's own size; resize-convolution in G) and upsample them bilinearly in the graph,
# as the data loader upsamples the real ones: no grain, and an epoch costs a quarter of one at 16 x 16.
# - unconditional: InfoGAN-style categorical codes (argmax of 40 latent entries; no labels used) make the
#   generator's modes discrete (confident digits), minibatch-std in a batch-norm discriminator keeps them diverse, a
#   code weight of 0.5 keeps every class. At 16 x 16 (transposed convs) seed 0 gave 78% confident, FID 78; at 8 x 8
#   after 70 epochs, 90% confident, smallest class 6.9%, diversity 0.96, FID ~30 (real digits' own: ~9).
# - conditional: hinge + spectral norm + projection discriminator + minibatch-std, and an AC-GAN head. The AC head
#   buys confidence but collapses classes (weight 1: 98.6% right, the 1s at 0.37x real diversity); without it 91%
#   right and every class >= 0.80x. AC weight 0.3, 60 epochs, served (and judged) at truncation 0.8: generator width
#   64: 99.1% right, every class >= 0.72x, FID 16; width 48: 98.5%, 0.72x, FID 18 in 60% of the time; width 32:
#   97.7%, 0.72x (80 epochs: 98.7% but a class at 0.66x). 45 epochs at width 64: 99.0%, 0.71x, at the edge.
UNCONDITIONAL_MODEL: dict[str, Any] = {"codes": 40, "spectral_norm": False, "minibatch_std": True}
UNCONDITIONAL_TRAINING: dict[str, Any] = {
    "epochs": 70, "loss": "bce", "beta1": 0.5, "lr": 2e-4, "lr_d": 2e-4, "code_weight": 0.5, "eval_from": 30,
}  # fmt: skip
CONDITIONAL_MODEL: dict[str, Any] = {"auxiliary_classifier": True, "minibatch_std": True, "g_width": 48}
CONDITIONAL_TRAINING: dict[str, Any] = {"epochs": 60, "code_weight": 0.3, "eval_from": 30, "truncation": 0.8}
# `truncation` in a training preset (or JobOptions.extra) is not a training option: it is the latent scale the card
# is measured at and the published config's default_truncation (contracts/generation.py)
DIGITS_NATIVE_SIZE = 8  # the digits are 8 x 8 scans: the GANs make and judge them at 8 x 8, upsampled in the graph
DEFAULT_TRUNCATION = 1.0  # when a preset names none


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
    atlas: bool = True  # classifier: publish the neuron atlas (training/atlas.py); dry runs make a few-step one
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


def run_classifier(options: JobOptions) -> JobResult:
    started = time.monotonic()
    split = _setup(options)
    name, out_dir = _defaults(options, "classifier", split.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_cfg = ClassifierConfig(in_channels=split.channels, image_size=split.image_size,
                                 num_classes=len(split.classes))  # fmt: skip
    train_cfg = ClassifierTrainConfig(seed=options.seed, dry_run=options.dry_run, device=options.device,
                                      progress_bar=options.progress_bar, **_overrides(options))  # fmt: skip
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
                          intra_op_threads=_intra_op_threads(split),
                          latency_budget_ms=CLASSIFIER_LATENCY_BUDGET_MS)  # fmt: skip
    version_dir = publish(options.repository, name, exported.model.SerializeToString(), config, split.classes,
                          extra_files=atlas)  # fmt: skip
    if options.quantize is not None:
        _publish_variant(options, name, split)
    return JobResult(name, version_dir, report, time.monotonic() - started)


def _publish_variant(options: JobOptions, name: str, split: DataSplit) -> None:
    """The variant of the model just published, calibrated on this run's training side and gated on its validation
    side; GateRefused (the model itself stays published) when a gate refuses."""
    from cnnserve.training.variants.calibration import split_images
    from cnnserve.training.variants.make import VariantOptions, make_variant

    images = split_images(split, seed=0)  # the split's own seed: _setup's load_dataset takes its default
    variant = make_variant(options.repository, name, images, VariantOptions(variant_format=options.quantize or "int8"))
    print(f"published {variant.name} -> {variant.version_dir}")


def _atlas(run: ClassifierRun, split: DataSplit, name: str, options: JobOptions) -> dict[str, bytes]:
    """The atlas files; a dry run's takes a few steps, so the smoke test still writes every file."""
    config = AtlasConfig(seed=options.seed)
    if options.dry_run:
        config = replace(config, steps=ATLAS_DRY_RUN_STEPS)
    return build_atlas(run.model, run.mean, run.std, split.val, split.classes, name, config)


def find_judge(options: JobOptions) -> Judge | None:
    """The GAN report's classifier: --judge, else the newest digits_cnn (trained first when absent)."""
    if options.judge is not None:
        return Judge.find(options.judge, options.repository)
    if options.dataset != DIGITS:
        logger.warning("no --judge for dataset=%s: the GAN report card has no thresholds", options.dataset)
        return None
    path = latest_model(options.repository, DEFAULT_CLASSIFIER)
    if path is None:
        logger.info("judge %s missing in %s: training it first", DEFAULT_CLASSIFIER, options.repository)
        run_classifier(JobOptions(repository=options.repository, seed=options.seed, device=options.device,
                                  threads=options.threads, dry_run=options.dry_run))  # fmt: skip
        path = latest_model(options.repository, DEFAULT_CLASSIFIER)
        assert path is not None  # just published; not a user error
    return Judge(path)


def run_gan(options: JobOptions) -> JobResult:
    started = time.monotonic()
    judge = find_judge(options)
    split = _setup(options)
    name, out_dir = _defaults(options, "cgan" if options.conditional else "gan", split.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    preset = (CONDITIONAL_MODEL if options.conditional else UNCONDITIONAL_MODEL) | options.model_extra
    native = DIGITS_NATIVE_SIZE if split.name == DIGITS and split.image_size >= DIGITS_NATIVE_SIZE else 0
    gan_cfg = GanConfig(image_size=split.image_size, channels=split.channels, native_size=native,
                        num_classes=len(split.classes) if options.conditional else 0, **preset)  # fmt: skip
    shape = (split.channels, split.image_size, split.image_size)
    if judge is not None and judge.shape != shape:
        raise ValueError(f"judge {judge.path} takes images {judge.shape}; this GAN makes {shape}")
    training = (CONDITIONAL_TRAINING if options.conditional else UNCONDITIONAL_TRAINING) | _overrides(options)
    truncation = float(training.pop("truncation", DEFAULT_TRUNCATION))
    train_cfg = GanTrainConfig(seed=options.seed, dry_run=options.dry_run, device=options.device,
                               progress_bar=options.progress_bar, **training)  # fmt: skip
    # D learns from the data at its native size exactly (the digits' own 8 x 8), not a resize of the resize
    native_split = load_dataset(options.dataset, native, options.channels) if native else split
    evaluator = None
    if judge is not None:
        evaluator = GanEvaluator(judge, split.train, gan_cfg.working_size, len(split.classes), gan_cfg.conditional,
                                 gan_cfg.latent_dim, truncation)  # fmt: skip
    selection_seed = options.seed + 3  # other latents than the card's (seed + 1)
    select = None if evaluator is None else lambda g: evaluator(partial(generate, g), selection_seed)
    run = train_gan(native_split, gan_cfg, train_cfg, out_dir, select)
    checks: list[Check] = []
    metrics: dict[str, Any] = {}
    if evaluator is not None and judge is not None:
        evaluation = evaluator(partial(generate, run.generator), options.seed + 1)
        checks, metrics = evaluation.checks, evaluation.metrics
        metrics["real_fid"] = round(real_fid_floor(judge, split.train, split.val), 3)
        save_truncation_grid(run.generator, truncation, out_dir / "truncation.png", options.seed)
    metrics |= {"epochs": run.epochs, "selected_epoch": run.selected_epoch, "evaluations": run.evaluations,
                "train_seconds": round(run.seconds, 1), "seed": options.seed, "dry_run": options.dry_run}  # fmt: skip
    report = card(name, checks, metrics)
    announce(report)
    write_json(out_dir / "report.json", report)
    real_latent = torch.randn(7, gan_cfg.latent_dim, generator=torch.Generator().manual_seed(options.seed + 2))
    real_classes = split.train.labels[:7] if gan_cfg.conditional else None

    def sample(n: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        z = torch.randn(n, gan_cfg.latent_dim, generator=g)
        if not gan_cfg.conditional:
            return (z,)
        return (z, torch.randint(0, gan_cfg.num_classes, (n,), generator=g))

    spec = ExportSpec(
        name=name, input_names=("latent", "class") if gan_cfg.conditional else ("latent",),
        output_names=("images",), sample_inputs=sample,
        real_inputs=(real_latent, _pad7(real_classes)) if real_classes is not None else (real_latent,),
        exporter=options.exporter,
    )  # fmt: skip
    postprocessing = {"output": "images", "range": [0.0, 1.0]}  # PixelGenerator: pixels, as classifiers take them
    metadata = build_metadata(split.classes if gan_cfg.conditional else [], {}, report,
                              {"model_config": gan_cfg.to_dict(), "postprocessing": postprocessing})  # fmt: skip
    exported = export_model(PixelGenerator(run.generator), spec, metadata)
    parameters = {"task": generation.TASKS[gan_cfg.conditional],
                  generation.LATENT_DIM_PARAMETER: str(gan_cfg.latent_dim),
                  generation.DEFAULT_TRUNCATION_PARAMETER: str(truncation)}  # fmt: skip
    if gan_cfg.conditional:
        parameters[generation.NUM_CLASSES_PARAMETER] = str(gan_cfg.num_classes)
    config = model_config(name, exported.inputs, exported.outputs, parameters, labels_file=gan_cfg.conditional,
                          postprocessing=postprocessing, intra_op_threads=_intra_op_threads(split))  # fmt: skip
    labels = split.classes if gan_cfg.conditional else None
    version_dir = publish(options.repository, name, exported.model.SerializeToString(), config, labels)
    return JobResult(name, version_dir, report, time.monotonic() - started)


def _pad7(classes: torch.Tensor) -> torch.Tensor:
    return classes.repeat(-(-7 // len(classes)))[: max(7, len(classes))]


def _intra_op_threads(split: DataSplit) -> int:
    """1 for small images (SMALL_IMAGE_PIXELS), else 0: ONNX Runtime's choice, a thread per core."""
    return 1 if split.image_size * split.image_size <= SMALL_IMAGE_PIXELS else 0
