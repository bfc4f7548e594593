"""The GAN's job: the judge (a published classifier, trained first when absent) -> digits or a class folder ->
DCGAN, unconditional or class-conditional, the checkpoint the judge scores best -> report card -> export (pixels
out, PixelGenerator) -> publish."""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

import torch

from cnnserve.contracts import generation
from cnnserve.training.data import DIGITS, load_dataset
from cnnserve.training.export import ExportSpec, build_metadata, export_model
from cnnserve.training.gan.evaluation import GanEvaluator, real_fid_floor
from cnnserve.training.gan.judge import Judge
from cnnserve.training.gan.kind import GanOptions
from cnnserve.training.gan.loop import GanTrainConfig, train_gan
from cnnserve.training.gan.model import GanConfig, PixelGenerator
from cnnserve.training.gan.presets import (
    CONDITIONAL_MODEL,
    CONDITIONAL_TRAINING,
    DEFAULT_TRUNCATION,
    DIGITS_NATIVE_SIZE,
    UNCONDITIONAL_MODEL,
    UNCONDITIONAL_TRAINING,
)
from cnnserve.training.gan.sampling import generate, save_truncation_grid
from cnnserve.training.kinds import JobResult, built_in
from cnnserve.training.publish import latest_model, model_config, publish, small_image_threads
from cnnserve.training.report import Check, announce, card
from cnnserve.training.runs import start, write_json

logger = logging.getLogger(__name__)

JUDGE_KIND = "classifier"  # its default model (digits_cnn) judges GANs of digits, trained when the repository lacks it


def find_judge(options: GanOptions) -> Judge | None:
    """The GAN report's classifier: --judge, else the newest digits_cnn (trained first when absent, by the classifier
    kind through the registry: the kinds import none of each other's modules)."""
    if options.judge is not None:
        return Judge.find(options.judge, options.repository)
    if options.dataset != DIGITS:
        logger.warning("no --judge for dataset=%s: the GAN report card has no thresholds", options.dataset)
        return None
    classifier = built_in()[JUDGE_KIND]
    judge = classifier.defaults[0].name  # named once, by the kind that trains it
    path = latest_model(options.repository, judge)
    if path is None:
        logger.info("judge %s missing in %s: training it first", judge, options.repository)
        classifier.run(classifier.options(repository=options.repository, name=judge, seed=options.seed,
                                          device=options.device, threads=options.threads,
                                          dry_run=options.dry_run))  # fmt: skip
        path = latest_model(options.repository, judge)
        assert path is not None  # just published; not a user error
    return Judge(path)


def run_gan(options: GanOptions) -> JobResult:
    started = time.monotonic()
    judge = find_judge(options)
    start(options)
    split = load_dataset(options.dataset, options.image_size, options.channels)  # the split's seed: always 0
    name = options.name or f"{'cdcgan' if options.conditional else 'dcgan'}_{split.name}"
    out_dir = options.artefacts(name)
    preset = (CONDITIONAL_MODEL if options.conditional else UNCONDITIONAL_MODEL) | options.model_extra
    native = DIGITS_NATIVE_SIZE if split.name == DIGITS and split.image_size >= DIGITS_NATIVE_SIZE else 0
    gan_cfg = GanConfig(image_size=split.image_size, channels=split.channels, native_size=native,
                        num_classes=len(split.classes) if options.conditional else 0, **preset)  # fmt: skip
    shape = (split.channels, split.image_size, split.image_size)
    if judge is not None and judge.shape != shape:
        raise ValueError(f"judge {judge.path} takes images {judge.shape}; this GAN makes {shape}")
    training = (CONDITIONAL_TRAINING if options.conditional else UNCONDITIONAL_TRAINING) | options.training_overrides()
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
                          postprocessing=postprocessing,
                          intra_op_threads=small_image_threads(split.image_size))  # fmt: skip
    labels = split.classes if gan_cfg.conditional else None
    version_dir = publish(options.repository, name, exported.model.SerializeToString(), config, labels)
    return JobResult(name, version_dir, report, time.monotonic() - started)


def _pad7(classes: torch.Tensor) -> torch.Tensor:
    return classes.repeat(-(-7 // len(classes)))[: max(7, len(classes))]
