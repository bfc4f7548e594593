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
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from cnnserve.contracts import generation, segmentation, style
from cnnserve.service.errors import ModelLoadError
from cnnserve.service.kinds.base import Kind
from cnnserve.service.kinds.classification import ClassificationKind
from cnnserve.service.kinds.generation import GenerationKind
from cnnserve.service.kinds.image_to_image import ImageToImageKind
from cnnserve.service.kinds.padding import KEYS as SPATIAL_KEYS
from cnnserve.service.kinds.segmentation import SegmentationKind
from cnnserve.service.settings import Settings
from cnnserve.service.types import ModelSpec

logger = logging.getLogger(__name__)

KIND_PARAMETER = "kind"
"""config parameter: the kind by name or dotted path; wins over `task`."""
TASK_PARAMETER = "task"
ENTRY_POINT_GROUP = "cnnserve.kinds"

BUILT_IN: Mapping[str, type[Kind]] = {
    Kind.name: Kind,
    ClassificationKind.name: ClassificationKind,
    GenerationKind.name: GenerationKind,
    SegmentationKind.name: SegmentationKind,
    ImageToImageKind.name: ImageToImageKind,
}
TASKS: Mapping[str, type[Kind]] = {
    **BUILT_IN,
    **dict.fromkeys(generation.TASKS, GenerationKind),
    segmentation.TASK: SegmentationKind,
    style.TASK: ImageToImageKind,
}
"""config parameter `task` -> its kind; a task not listed here (and no plug-in's) leaves the config to decide."""


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
    task = parameters.get(TASK_PARAMETER)
    if task is not None:
        found = TASKS.get(task) or _plugin(task)
        if found is not None:
            return found
    return _described(spec)


def _described(spec: ModelSpec) -> type[Kind]:
    """A config without a known task: outputs in input pixels make a segmenter (with a mask or boxes) or an
    image-to-image model; labels or an image input make a classifier; anything else is served as plain tensors."""
    post = spec.postprocessing
    if any(key in post for key in SPATIAL_KEYS):
        if segmentation.POSTPROCESSING_MASK in post or segmentation.POSTPROCESSING_BOXES in post:
            return SegmentationKind
        return ImageToImageKind
    if spec.label_output is not None or spec.image_input is not None:
        return ClassificationKind
    return Kind


def _named(value: str, config_path: Path) -> type[Kind]:
    where = f"{config_path}: key 'parameters.{KIND_PARAMETER}'"
    if ":" not in value and "." not in value:
        found = BUILT_IN.get(value) or _plugin(value)
        if found is None:
            raise ModelLoadError(
                f"{where} names {value!r}, which is neither a built-in kind ({', '.join(BUILT_IN)}) nor an "
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
