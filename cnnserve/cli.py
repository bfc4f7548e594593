"""The `cnnserve` command: dispatches each subcommand to its package, imported only when used.

Lazy imports keep `cnnserve serve` free of torch and let a user without the `train` extra get a
one-line explanation instead of a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

# subcommand -> (module holding `main(argv) -> int`, extra that provides its dependencies, summary)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("cnnserve.training.cli", "train", "train a classifier, GAN, segmenter or style model"),
    "serve": ("cnnserve.service.edge.cli", "cpu", "serve a model repository over gRPC (Open Inference Protocol)"),
    "quantize": ("cnnserve.training.variants.cli", "cpu", "publish a gated INT8 (or FP16) variant of a classifier"),
    "run": ("cnnserve.run", "cpu,train", "train the default models if missing, then serve them"),
    "classify": ("cnnserve.client.cli", "", "classify image files with a running server"),
    "generate": ("cnnserve.client.cli", "", "generate images with a running generator model"),
    "segment": ("cnnserve.client.cli", "", "find and outline the objects in image files with a running segmenter"),
    "stylize": ("cnnserve.client.cli", "", "restyle photos with a running style model, one PNG each"),
    "explain": ("cnnserve.client.cli", "", "show where a classifier looks in image files (occlusion heatmaps)"),
    "models": ("cnnserve.client.cli", "", "list the models of a running server"),
    "health": ("cnnserve.client.cli", "", "check a server's health (exit code 0 when ready)"),
    "bench": ("cnnserve.benchmarks.bench", "cpu", "benchmark a running server against in-process ONNX Runtime"),
}


def _usage() -> str:
    lines = ["usage: cnnserve COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, _, summary) in COMMANDS.items()]
    lines += ["", "`cnnserve COMMAND --help` describes a command's options."]
    return "\n".join(lines)


def _load(command: str) -> Callable[[Sequence[str]], int]:
    module_name, extra, _ = COMMANDS[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        # Only a missing third-party dependency earns the install hint; our own bugs should surface.
        top = (err.name or "").split(".")[0]
        if top == "cnnserve":
            raise
        hint = f"pip install 'cnnserve[{extra}]'" if extra else "pip install cnnserve"
        raise SystemExit(f"cnnserve {command}: needs the package '{top}', which is not installed ({hint})") from None
    entry: Callable[[Sequence[str]], int] = module.main
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"cnnserve: unknown command '{command}'\n\n{_usage()}", file=sys.stderr)
        return 2
    if command in {"classify", "generate", "segment", "stylize", "explain", "models", "health"}:
        rest = [command, *rest]
    return _load(command)(rest)
