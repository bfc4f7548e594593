"""`cnnserve quantize --model-repository DIR MODEL --calibration SOURCE`: publish a gated INT8 (or FP16) variant of
a classifier as MODEL_int8 (docs/quantization.md). Exit 0: published; 1: refused by a gate or bad input, one line
on stderr naming it; nothing is published then."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cnnserve.contracts.variants import VARIANT_FORMATS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnnserve quantize", description=__doc__.splitlines()[0])
    p.add_argument("model", help="the classifier to make a variant of (its newest version)")
    p.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    p.add_argument(
        "--calibration",
        required=True,
        metavar="SOURCE",
        help="'digits' (the default models' own split) or a folder of images: class folders named like "
        "the model's labels (gated on accuracy) or images directly (gated on top-1 agreement)",
    )
    p.add_argument(
        "--format",
        dest="variant_format",
        choices=VARIANT_FORMATS,
        default="int8",
        help="int8: static QDQ, gated on accuracy and CPU speed; fp16: for the CUDA provider only",
    )
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=0.5,
        help="refuse when labelled top-1 accuracy drops by more percentage points (default 0.5)",
    )
    p.add_argument(
        "--min-agreement",
        type=float,
        default=0.99,
        help="without labels, refuse below this share of top-1 answers equal to FP32's (default 0.99)",
    )
    p.add_argument(
        "--min-speedup",
        type=float,
        default=1.0,
        help="refuse unless the variant's in-process items/s exceed FP32's by more than this factor "
        "(default 1: it must be faster)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="the speed gate's batch (default: the model's preferred batch size, else max_batch_size)",
    )
    p.add_argument(
        "--speed-duration-s",
        type=float,
        default=2.0,
        help="timed seconds per model per round of the speed gate (3 rounds, medians)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the split's seed (default 0: the split every training run makes, so calibration stays "
        "off the images it validated on)",
    )
    return p


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)  # fmt: skip
    from cnnserve.training.publish import PublishError
    from cnnserve.training.variants.gate import GateLimits
    from cnnserve.training.variants.make import GateRefused, VariantOptions, make_variant
    from cnnserve.training.variants.source import VariantError

    if args.batch_size is not None and args.batch_size < 1:
        print(f"cnnserve quantize: error: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 1
    limits = GateLimits(args.max_accuracy_drop, args.min_agreement, args.min_speedup)
    options = VariantOptions(
        variant_format=args.variant_format, limits=limits, batch_size=args.batch_size,
        speed_duration_s=args.speed_duration_s, seed=args.seed,
    )  # fmt: skip
    try:
        result = make_variant(args.model_repository, args.model, args.calibration, options)
    except GateRefused as err:
        print(f"cnnserve quantize: refused by the {err.gate} gate, nothing published: {err}", file=sys.stderr)
        return 1
    except (VariantError, PublishError, OSError) as err:
        print(f"cnnserve quantize: error: {err}", file=sys.stderr)
        return 1
    print(f"published {result.name} -> {result.version_dir}")
    return 0
