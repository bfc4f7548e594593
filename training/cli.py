"""`cnnserve train classifier|gan|segmenter|style|defaults|benchmark-models`: argparse -> JobOptions -> jobs."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cnnserve.contracts.variants import VARIANT_FORMATS

logger = logging.getLogger(__name__)


def _run_options(parser: argparse.ArgumentParser) -> None:
    """What every training command takes alike: where it publishes, its seed, device and threads."""
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"), help="where to publish")
    parser.add_argument("--seed", type=int, default=0, help="seeds everything (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: one per available core)")


def _common(
    parser: argparse.ArgumentParser,
    dataset_help: str = "'digits' (sklearn's, offline) or a folder root/<class>/<image>",
) -> None:
    parser.add_argument("--dataset", default="digits", help=dataset_help)
    _run_options(parser)
    parser.add_argument("--name", help="model name in the repository (default: digits_cnn, dcgan_digits, ...)")
    parser.add_argument("--epochs", type=int, help="passes over the training split (default per model)")
    parser.add_argument("--batch-size", type=int, help="images per step (default per model)")
    parser.add_argument("--lr", type=float, help="learning rate (classifier: peak; GAN: generator) (default per model)")
    parser.add_argument("--out-dir", type=Path, help="artefacts: checkpoints, PNGs, report.json (default runs/<name>/)")
    parser.add_argument("--dry-run", action="store_true", help="one batch of one epoch, then export and publish")
    parser.add_argument("--image-size", type=int, default=16, help="images are resized to this square size")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=1, help="1 grey or 3 RGB (folders)")
    parser.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                        help="ONNX exporter (default torchscript: ~0.1 s a model; dynamo: ~3 s)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnserve train", description="Train models and publish them as ONNX.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    classifier = commands.add_parser("classifier", help="train the CNN classifier")
    _common(classifier)
    classifier.add_argument("--no-atlas", dest="atlas", action="store_false",
                            help="publish without the neuron atlas (docs/atlas.md; it costs ~10-25 s)")  # fmt: skip
    classifier.add_argument("--quantize", choices=VARIANT_FORMATS,
                            help="then publish a gated variant, <name>_int8 or <name>_fp16, calibrated on this run's "
                            "training side and gated on its validation side (docs/quantization.md)")  # fmt: skip
    gan = commands.add_parser("gan", help="train a DCGAN (or class-conditional DCGAN with --conditional)")
    _common(gan)
    gan.add_argument("--conditional", action="store_true", help="class-conditional generator and discriminator")
    gan.add_argument("--judge", help="classifier for the report card: model.onnx path or model name "
                     "(default: newest digits_cnn in the repository, trained first when absent)")  # fmt: skip
    gan.add_argument("--lr-d", type=float, help="discriminator learning rate (default per model)")
    segmenter = commands.add_parser("segmenter", help="train the U-Net segmenter with in-graph boxes")
    _common(segmenter, "'digits' (scenes of sklearn's digits, offline) or a folder with images/, masks/, classes.txt")
    segmenter.add_argument("--min-miou", type=float, help="refuse to publish below this test mIoU "
                           "(default 0.80 on digits, none on folders; dry runs never refuse)")  # fmt: skip
    segmenter.add_argument("--min-found", type=float, help="refuse to publish below this share of test objects "
                           "found (default 0.90 on digits, none on folders)")  # fmt: skip
    style = commands.add_parser("style", help="train a feed-forward style-transfer network (image to image)")
    style.add_argument(
        "--style",
        default="painted",
        help="style image file, or 'painted' (a procedural brush-stroke painting; the default)",
    )
    style.add_argument(
        "--content",
        default="bundled",
        help="folder of content photos, or 'bundled' (scikit-image's and scikit-learn's; default)",
    )
    _run_options(style)
    style.add_argument("--name", help="model name (default: stylize_<style file name>, stylize_brushstrokes)")
    style.add_argument("--steps", type=int, help="optimiser steps (default 180, ~2.5 min on one core)")
    style.add_argument("--batch-size", type=int, help="crops per step (default 4)")
    style.add_argument("--lr", type=float, help="Adam's peak learning rate (default 2e-3)")
    style.add_argument("--out-dir", type=Path, help="artefacts: curves, before/after grid, report.json")
    style.add_argument("--dry-run", action="store_true", help="one step, then report, export and publish")
    style.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript")
    defaults = commands.add_parser("defaults", help="train the default models into a repository if missing")
    defaults.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    defaults.add_argument("--dry-run", action="store_true", help="smoke-test settings (not for serving)")
    bench = commands.add_parser("benchmark-models", help="export heavy_cnn (random weights) for server benchmarks")
    bench.add_argument("--model-repository", type=Path, default=Path("benchmarks/model_repository"))
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)  # fmt: skip
    from cnnserve.training.export import ExportError
    from cnnserve.training.publish import PublishError
    from cnnserve.training.variants.make import GateRefused

    try:
        return _dispatch(args)
    except GateRefused as err:
        print(f"cnnserve train {args.command}: the model is published; its variant was refused by the {err.gate} "
              f"gate, nothing more published: {err}", file=sys.stderr)  # fmt: skip
        return 1
    except (ValueError, FileNotFoundError, ExportError, PublishError) as err:
        # User-facing failures (bad dataset, bad flags, parity refused): one line, no traceback.
        print(f"cnnserve train {args.command}: error: {err}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "defaults":
        from cnnserve.training.defaults import ensure_default_models

        ensure_default_models(args.model_repository, dry_run=args.dry_run)
        return 0
    if args.command == "benchmark-models":
        from cnnserve.training.classifier.benchmark import publish_benchmark_models

        publish_benchmark_models(args.model_repository)
        return 0
    if args.command == "style":
        from cnnserve.training.style.job import StyleOptions, run_style

        result = run_style(StyleOptions(
            style=args.style, content=args.content, repository=args.model_repository, name=args.name,
            out_dir=args.out_dir, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
            device=args.device, threads=args.threads, dry_run=args.dry_run, exporter=args.exporter,
        ))  # fmt: skip
        print(f"published {result.name} -> {result.version_dir} in {result.seconds:.1f}s")
        return 0
    from cnnserve.training.classifier.job import run_classifier
    from cnnserve.training.gan.job import run_gan
    from cnnserve.training.jobs import JobOptions
    from cnnserve.training.segmenter.job import run_segmenter

    extra = {"lr_d": args.lr_d} if getattr(args, "lr_d", None) is not None else {}
    options = JobOptions(
        dataset=args.dataset, repository=args.model_repository, name=args.name, out_dir=args.out_dir,
        image_size=args.image_size, channels=args.channels, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, device=args.device, threads=args.threads, dry_run=args.dry_run,
        conditional=getattr(args, "conditional", False), judge=getattr(args, "judge", None), extra=extra,
        exporter=args.exporter, min_miou=getattr(args, "min_miou", None), min_found=getattr(args, "min_found", None),
        atlas=getattr(args, "atlas", True), quantize=getattr(args, "quantize", None),
    )  # fmt: skip
    jobs = {"classifier": run_classifier, "gan": run_gan, "segmenter": run_segmenter}
    result = jobs[args.command](options)
    print(f"published {result.name} -> {result.version_dir} in {result.seconds:.1f}s")
    return 0
