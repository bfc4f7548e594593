"""Which kind serves a model: the config's `kind` parameter (a built-in name, an installed plug-in's name, or a
dotted path `package.module:Class` to a user's own Kind subclass), else its `task`, else what its config describes.

Plug-ins are installed packages that declare an entry point in the group `cnnserve.kinds` (name: the kind's name,
value: `package.module:Class`), or classes named by dotted path in a model's config; either way a subclass of
kinds.base.Kind. They are imported when a model that names them loads, never before, and a name that cannot be
imported is a load error of that model alone.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from functools import cache
from importlib import metadata
from pathlib import Path

from cnnserve.contracts import layout
from cnnserve.service import kinds
from cnnserve.service.errors import ModelLoadError
from cnnserve.service.kinds.base import Kind
from cnnserve.service.settings import Settings
from cnnserve.service.types import ModelSpec

logger = logging.getLogger(__name__)

KIND_PARAMETER = "kind"
"""config parameter: the kind by name or dotted path; wins over `task`."""
ENTRY_POINT_GROUP = "cnnserve.kinds"


@cache
def built_in() -> dict[str, type[Kind]]:
    """Every module of this package imported once, so that each kind in it has registered itself (base.py's
    Kind.__init_subclass__): a built-in kind is one module here, named nowhere else."""
    for module in pkgutil.iter_modules(kinds.__path__):
        importlib.import_module(f"{kinds.__name__}.{module.name}")
    own = f"{kinds.__name__}."  # a plug-in imported before this runs stays a plug-in: named, never guessed
    return {Kind.name: Kind, **{task: cls for task, cls in Kind._by_task.items() if cls.__module__.startswith(own)}}


def build(spec: ModelSpec, config_path: Path, settings: Settings) -> Kind:
    """The kind serving this loaded version, built and checked; ModelLoadError naming the config key otherwise."""
    cls = kind_class(spec, config_path)
    try:
        kind = cls(spec, config_path, settings)
    except ModelLoadError:
        raise
    except Exception as err:  # a user's kind that fails to construct fails its model, not the server
        raise ModelLoadError(
            f"{config_path}: kind {cls.name!r} refused the model: {type(err).__name__}: {err}"
        ) from err
    return kind


def kind_class(spec: ModelSpec, config_path: Path) -> type[Kind]:
    parameters = spec.parameters
    named = parameters.get(KIND_PARAMETER)
    if named is not None:
        return _named(named, config_path)
    task = parameters.get(layout.TASK_PARAMETER)
    if task is not None:
        found = built_in().get(task) or _plugin(task)
        if found is not None:
            return found
    return _described(spec)


def _described(spec: ModelSpec) -> type[Kind]:
    """A config without a known task: the built-in kind of highest precedence whose `describes` accepts it (outputs
    in input pixels make a segmenter or an image-to-image model, labels or an image input a classifier); anything
    else is served as plain tensors."""
    candidates = sorted(set(built_in().values()), key=lambda cls: -cls.precedence)
    return next((cls for cls in candidates if cls.describes(spec)), Kind)


def _named(value: str, config_path: Path) -> type[Kind]:
    where = f"{config_path}: key 'parameters.{KIND_PARAMETER}'"
    if ":" not in value and "." not in value:
        found = built_in().get(value) or _plugin(value)
        if found is None:
            raise ModelLoadError(
                f"{where} names {value!r}, which is neither a built-in kind ({', '.join(sorted(built_in()))}) nor an "
                f"installed plug-in (entry point group {ENTRY_POINT_GROUP!r}); give a dotted path "
                "'package.module:Class' for your own"
            )
        return found
    module_name, _, attribute = value.partition(":") if ":" in value else value.rpartition(".")
    try:
        found_object = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as err:
        raise ModelLoadError(f"{where}: cannot import {value!r}: {type(err).__name__}: {err}") from None
    return _checked(found_object, value, where)


def _plugin(name: str) -> type[Kind] | None:
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP, name=name):
        try:
            loaded = entry.load()
        except Exception as err:
            raise ModelLoadError(f"kind plug-in {name!r} ({entry.value}) cannot be imported: {err}") from None
        return _checked(loaded, entry.value, f"entry point {ENTRY_POINT_GROUP}:{name}")
    return None


def _checked(found: object, value: str, where: str) -> type[Kind]:
    if not (isinstance(found, type) and issubclass(found, Kind)):
        raise ModelLoadError(f"{where}: {value!r} is not a subclass of cnnserve.service.kinds.base.Kind")
    logger.info("event=kind_loaded kind=%s from=%s", found.name, value)
    return found
