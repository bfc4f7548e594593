"""The training kinds: what a kind declares (`TrainingKind`: its command, options, flags, job and default models),
what its job answers (`JobResult`), and where kinds are found: every package of training/ that holds a `kind`
module (its `KIND`) is built in; an installed package adds one through the entry point group
`cnnserve.training_kinds` (name: the kind's, value: `package.module:KIND`); `cnnserve train --kind
package.module:KIND` names one by dotted path. docs/training-kinds.md shows a kind of one's own.

Torch-free: a kind's job imports torch when it runs, so the CLI and `defaults` read every kind without it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, TypeVar

from cnnserve import training
from cnnserve.training.image_sources import DIGITS
from cnnserve.training.options import RunOptions

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "cnnserve.training_kinds"
KIND_MODULE = "kind"  # a built-in kind: training/<package>/kind.py
KIND_ATTRIBUTE = "KIND"  # the TrainingKind that module declares
COMMANDS = frozenset({"defaults", "benchmark-models"})
"""`cnnserve train`'s own commands, which no kind may take as its name."""
NAME_RULE = re.compile(r"[a-z][a-z0-9_-]*")

OptionsT = TypeVar("OptionsT", bound=RunOptions)


class KindError(ValueError):
    """A training kind that cannot be found, imported or used; the message names it and the rule."""


@dataclass(frozen=True)
class JobResult:
    name: str  # the model name published
    version_dir: Path  # <repo>/<name>/<version>
    report: dict[str, Any]  # the report card
    seconds: float  # wall time of the whole job


@dataclass(frozen=True)
class DefaultModel(Generic[OptionsT]):
    """A model `cnnserve train defaults` (and `cnnserve run`) trains when the repository lacks it."""

    options: OptionsT  # the job's options, `name` set; `defaults` sets repository, out_dir and dry_run
    minutes: float  # about how long it trains on one core: the models after the first ones start longest first
    first: bool = False  # trained before the rest, alone, on every core: their report cards need it (the judge)
    variants: tuple[str, ...] = ()  # variant formats published after it when their gates pass (docs/quantization.md)
    calibration: str = DIGITS  # the image source its variants are calibrated and gated on

    def __post_init__(self) -> None:
        if not self.options.name:
            raise KindError(f"a default model needs a name in its options, got {self.options!r}")

    @property
    def name(self) -> str:
        return str(self.options.name)


@dataclass(frozen=True)
class TrainingKind(Generic[OptionsT]):
    """A kind of model `cnnserve train <name>` trains: the one place it declares itself."""

    name: str  # its command, `cnnserve train <name>`
    help: str  # its line in `cnnserve train --help`
    options: type[OptionsT]  # its options dataclass; `options.from_args` reads them from its flags
    add_arguments: Callable[[argparse.ArgumentParser], None]  # its flags; each flag's dest is an options field
    run: Callable[[OptionsT], JobResult]  # its job: train, report card, export, parity check, publish
    defaults: tuple[DefaultModel[OptionsT], ...] = ()  # what `cnnserve train defaults` trains of it

    def __post_init__(self) -> None:
        if not NAME_RULE.fullmatch(self.name) or self.name in COMMANDS:
            raise KindError(f"training kind name {self.name!r}: lower-case letters, digits, '_' and '-', starting "
                            f"with a letter, and none of {', '.join(sorted(COMMANDS))}")  # fmt: skip
        if not (isinstance(self.options, type) and issubclass(self.options, RunOptions)):
            raise KindError(f"training kind {self.name!r}: options must be a RunOptions dataclass, got {self.options}")


@cache
def built_in() -> dict[str, TrainingKind[Any]]:
    """The kinds of training/ itself, by name, in package order: each package that holds a `kind` module."""
    found: dict[str, TrainingKind[Any]] = {}
    for package in pkgutil.iter_modules(training.__path__):
        module_name = f"{training.__name__}.{package.name}.{KIND_MODULE}"
        if package.ispkg and importlib.util.find_spec(module_name) is not None:
            kind = _checked(getattr(importlib.import_module(module_name), KIND_ATTRIBUTE, None), module_name)
            found[kind.name] = kind
    return found


def plugins() -> dict[str, TrainingKind[Any]]:
    """Installed plug-ins, by name. One that cannot be imported is skipped with a warning: a broken plug-in never
    takes `cnnserve train` down with it."""
    found: dict[str, TrainingKind[Any]] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            kind = _checked(entry.load(), f"entry point {ENTRY_POINT_GROUP}:{entry.name} = {entry.value}")
        except Exception as err:  # whatever a plug-in's import raises
            logger.warning("event=kind_plugin_skipped name=%s value=%s error=%s: %s", entry.name, entry.value,
                           type(err).__name__, err)  # fmt: skip
            continue
        found[kind.name] = kind
    return found


def installed() -> dict[str, TrainingKind[Any]]:
    """The built-in kinds, then the plug-ins (read afresh each call); a plug-in never replaces a built-in kind."""
    kinds = dict(built_in())
    for name, kind in plugins().items():
        if name in kinds:
            logger.warning("event=kind_plugin_shadowed name=%s: the built-in kind of that name is kept", name)
            continue
        kinds[name] = kind
    return kinds


def load(path: str) -> TrainingKind[Any]:
    """The kind a dotted path `package.module:ATTRIBUTE` names."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise KindError(f"--kind {path!r}: give a dotted path 'package.module:KIND'")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as err:
        raise KindError(f"--kind {path}: cannot import it: {type(err).__name__}: {err}") from None
    return _checked(found, path)


def _checked(found: object, where: str) -> TrainingKind[Any]:
    if not isinstance(found, TrainingKind):
        raise KindError(f"{where}: expected a cnnserve.training.kinds.TrainingKind, got {type(found).__name__}")
    return found
