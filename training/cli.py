"""`cnnserve train KIND|defaults|benchmark-models`: a command per training kind (kinds.py: classifier, gan,
segmenter, style, installed plug-ins, and `--kind package.module:KIND`), each argparse -> its options -> its job."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cnnserve.training import kinds
from cnnserve.training.kinds import TrainingKind

logger = logging.getLogger(__name__)

Command = Callable[[argparse.Namespace], int]


def build_parser(extra: Sequence[TrainingKind[Any]] = ()) -> argparse.ArgumentParser:
    """Every installed kind's command, then `extra` kinds' (named by --kind), then the trainer's own commands."""
    parser = argparse.ArgumentParser(prog="cnnserve train", description="Train models and publish them as ONNX.")
    parser.add_argument("--kind", dest="kind_paths", action="append", default=[], metavar="MODULE:KIND",
                        help="add a training kind of your own by dotted path (docs/training-kinds.md)")  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for kind in [*kinds.installed().values(), *extra]:
        command = commands.add_parser(kind.name, help=kind.help)
        kind.add_arguments(command)
        command.set_defaults(run_command=_job(kind))
    defaults = commands.add_parser("defaults", help="train the default models into a repository if missing")
    defaults.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    defaults.add_argument("--dry-run", action="store_true", help="smoke-test settings (not for serving)")
    defaults.set_defaults(run_command=_defaults)
    bench = commands.add_parser("benchmark-models", help="export heavy_cnn (random weights) for server benchmarks")
    bench.add_argument("--model-repository", type=Path, default=Path("benchmarks/model_repository"))
    bench.set_defaults(run_command=_benchmark_models)
    return parser


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    try:
        extra = [kinds.load(path) for path in _kind_paths(args)]
    except kinds.KindError as err:
        print(f"cnnserve train: error: {err}", file=sys.stderr)
        return 1
    parsed = build_parser(extra).parse_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)  # fmt: skip
    from cnnserve.training.export import ExportError
    from cnnserve.training.publish import PublishError
    from cnnserve.training.variants.make import GateRefused

    run_command: Command = parsed.run_command
    try:
        return run_command(parsed)
    except GateRefused as err:
        print(f"cnnserve train {parsed.command}: the model is published; its variant was refused by the {err.gate} "
              f"gate, nothing more published: {err}", file=sys.stderr)  # fmt: skip
        return 1
    except (ValueError, FileNotFoundError, ExportError, PublishError) as err:
        # User-facing failures (bad dataset, bad flags, parity refused): one line, no traceback.
        print(f"cnnserve train {parsed.command}: error: {err}", file=sys.stderr)
        return 1


def _kind_paths(argv: Sequence[str]) -> list[str]:
    """The --kind values before the command: the parser needs their kinds to know their commands and flags."""
    paths: list[str] = []
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] == "--kind" and i + 1 < len(argv):
            paths.append(argv[i + 1])
            i += 1
        elif argv[i].startswith("--kind="):
            paths.append(argv[i].partition("=")[2])
        i += 1
    return paths


def _job(kind: TrainingKind[Any]) -> Command:
    def run(args: argparse.Namespace) -> int:
        result = kind.run(kind.options.from_args(args))
        print(f"published {result.name} -> {result.version_dir} in {result.seconds:.1f}s")
        return 0

    return run


def _defaults(args: argparse.Namespace) -> int:
    from cnnserve.training.defaults import ensure_default_models

    ensure_default_models(args.model_repository, dry_run=args.dry_run)
    return 0


def _benchmark_models(args: argparse.Namespace) -> int:
    from cnnserve.training.classifier.benchmark import publish_benchmark_models

    publish_benchmark_models(args.model_repository)
    return 0
