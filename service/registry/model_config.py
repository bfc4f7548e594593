"""config.json -> ModelConfig: read and check the file; completion.py then merges it with what the ONNX graph says.

Two steps because the graph is only known once a session exists: `read_config` here (file only, every key
checked, errors name the file and key) and `completion.resolve` (fills tensors in from the graph, refuses
contradictions). Triton's config.pbtxt, read when there is no config.json, and a load request's config in Triton's
JSON form are translated into a config.json document first (triton_config.py) and then read like one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnserve.contracts import datatypes, layout
from cnnserve.service.errors import ModelLoadError
from cnnserve.service.registry import triton_config, warmup
from cnnserve.service.types import DynamicBatching, ModelSpec, SessionOptions

logger = logging.getLogger(__name__)

CONFIG_FILE = layout.CONFIG_FILE
PLATFORM = layout.PLATFORM
DATATYPES = tuple(datatypes.DATATYPES)
PROVIDERS = ("tensorrt", "cuda", "cpu")
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
DEFAULT_MAX_BATCH_SIZE = 4
"""max_batch_size when config.json omits it (or is absent) and every graph tensor has a dynamic first axis: Triton's
default-max-batch-size, which its ONNX Runtime backend fills in when it completes a config (AutoCompleteMaxBatch),
also turning dynamic batching on."""

_KEYS = layout.CONFIG_KEYS
OVERRIDE = "(config of the load request)"
"""What errors name for a config sent with a load request: `<model>/(config of the load request): key ...`."""


@dataclass(frozen=True)
class TensorConfig:
    """A tensor as config.json lists it; datatype and dims may be left to the graph."""

    name: str
    datatype: str | None = None
    dims: tuple[int, ...] | None = None  # with the batch axis as -1 when max_batch_size > 0
    reshape: tuple[int, ...] | None = None  # Triton's reshape.shape: the graph's shape per item, no batch axis
    format: str | None = None  # inputs: Triton's input format, "NCHW" or "NHWC"


@dataclass(frozen=True)
class ModelConfig:
    """config.json as read: `spec` holds every setting but the tensors, which `resolve` adds from the graph."""

    path: Path
    spec: ModelSpec  # inputs and outputs empty until resolved
    max_batch_size: int | None  # None: decided from the graph
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    dynamic_batching_given: bool
    dims_per_item: bool = False
    """Tensor dims leave out the batch axis (Triton's form, from a config.pbtxt or a load request's Triton JSON):
    `resolve` adds it once max_batch_size is known, which may come from the graph."""

    @property
    def name(self) -> str:
        return self.spec.name


class _Reader:
    """Typed access to one JSON object; every failure names the file and the key path."""

    def __init__(self, path: Path, obj: Mapping[str, Any], prefix: str = "") -> None:
        self.path, self.obj, self.prefix = path, obj, prefix

    def error(self, key: str, rule: str) -> ModelLoadError:
        value = self.obj.get(key)
        return ModelLoadError(f"{self.path}: key '{self.prefix}{key}' must be {rule}, got {json.dumps(value)}")

    def refuse_unknown(self, allowed: Sequence[str]) -> None:
        unknown = sorted(set(self.obj) - set(allowed))
        if unknown:
            raise ModelLoadError(
                f"{self.path}: unknown key '{self.prefix}{unknown[0]}'; expected one of {', '.join(allowed)}"
            )

    def int_(self, key: str, default: int, minimum: int) -> int:
        value = self.obj.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(key, f"an integer >= {minimum}")
        return value

    def str_(self, key: str, default: str | None, choices: Sequence[str] = ()) -> str | None:
        value = self.obj.get(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str) or not value or (choices and value not in choices):
            raise self.error(key, f"one of {', '.join(choices)}" if choices else "a non-empty string")
        return value

    def bool_(self, key: str, default: bool) -> bool:
        value = self.obj.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "true or false")
        return value

    def list_(self, key: str, default: list[Any] | None = None) -> list[Any] | None:
        value = self.obj.get(key, default)
        if value is not None and not isinstance(value, list):
            raise self.error(key, "a list")
        return value

    def ints(self, key: str, minimum: int) -> tuple[int, ...]:
        values = self.list_(key, []) or []
        if any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in values):
            raise self.error(key, f"a list of integers >= {minimum}")
        return tuple(values)

    def object(self, key: str) -> _Reader | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.error(key, "an object")
        return _Reader(self.path, value, f"{self.prefix}{key}.")


def read_config(
    model_dir: Path, *, allowed_providers: Sequence[str] = PROVIDERS, override: str | None = None
) -> ModelConfig:
    """Parse `<model_dir>/config.json`; a folder without one reads as `{}`, completed from the graph by `resolve`.
    `allowed_providers` (the server's) filters the model's preference. `override`: a config.json document sent with
    a load request, read in the file's place (the file is neither read nor written); errors name it instead."""
    path, obj, dims_per_item = _document(model_dir, override)
    top = _Reader(path, obj)
    unknown = sorted(set(obj) - _KEYS)
    if unknown and override is not None:
        # A file may come from a newer trainer; a client's document at run time should be understood whole.
        raise ModelLoadError(
            f"{path}: unknown key '{unknown[0]}'; a load's config is a config.json document (keys "
            f"{', '.join(sorted(_KEYS))}) or Triton's ModelConfig as JSON (input, output, instance_group, ...), "
            "docs/model-repository.md"
        )
    if unknown:
        logger.warning("event=config_unknown_keys file=%s keys=%s", path, ",".join(unknown))

    name = top.str_("name", model_dir.name)
    if name != model_dir.name:
        raise ModelLoadError(f"{path}: name '{name}' must match its folder '{model_dir.name}'")
    assert name is not None
    top.str_("platform", PLATFORM, (PLATFORM,))
    max_batch_size = None if obj.get("max_batch_size") is None else top.int_("max_batch_size", 0, 0)
    labels_file = top.str_("labels_file", None)
    spec = ModelSpec(
        name=name,
        platform=PLATFORM,
        max_batch_size=0,
        inputs=(),
        outputs=(),
        dynamic_batching=_dynamic_batching(top),
        instance_count=top.int_("instance_count", 1, 1),
        labels=_labels(model_dir, labels_file, path) if labels_file else (),
        labels_file=labels_file,
        label_output=top.str_("label_output", None),
        preprocessing=_free_form(top, "preprocessing"),
        postprocessing=_free_form(top, "postprocessing"),
        parameters=_parameters(top),
        session=_session(top),
        execution_providers=_providers(top, allowed_providers),
        version_policy=_version_policy(top),
        model_warmup=warmup.read_samples(path, obj.get("model_warmup")),
    )
    return ModelConfig(
        path=path,
        spec=spec,
        max_batch_size=max_batch_size,
        inputs=_tensors(top, "inputs"),
        outputs=_tensors(top, "outputs"),
        dynamic_batching_given="dynamic_batching" in obj,
        dims_per_item=dims_per_item,
    )


def _document(model_dir: Path, override: str | None) -> tuple[Path, dict[str, Any], bool]:
    """(where errors say it came from, the config.json document, whether its dims are per item): a load request's
    config (config.json's form or Triton's JSON), else config.json, else config.pbtxt, else {}."""
    if override is not None:
        path = model_dir / OVERRIDE
        obj = _parse(path, override)
        if not triton_config.is_triton_document(obj, path):
            return path, obj, False
        return path, _logged(path, triton_config.read_json(obj, path, model_dir)), True
    path, pbtxt = model_dir / CONFIG_FILE, model_dir / triton_config.FILE
    text = _read_text(model_dir, path, "JSON")
    if text is not None:
        if pbtxt.exists():
            logger.warning("event=config_pbtxt_ignored model=%s reason=config.json_wins", model_dir.name)
        return path, _parse(path, text), False
    text = _read_text(model_dir, pbtxt, "text")
    if text is None:
        # As Triton completes an ONNX model's config: a folder of versions alone serves as if it held {}.
        return path, {}, False
    return pbtxt, _logged(pbtxt, triton_config.read_text(text, pbtxt, model_dir)), True


def _read_text(model_dir: Path, path: Path, form: str) -> str | None:
    """The file's text; None when there is none."""
    if path.is_symlink() and not path.resolve().is_relative_to(model_dir.resolve()):
        # as model files are: a link out of the model folder could make the server read any file it can open
        raise ModelLoadError(f"{path}: a link that leads out of the model folder; put {path.name} itself there")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"{path}: cannot read it as {form}: {err}") from None


def _logged(path: Path, translated: triton_config.Translated) -> dict[str, Any]:
    for note in translated.notes:
        logger.warning("event=triton_config_field_ignored file=%s note=%s", path, note)
    return translated.document


def _parse(path: Path, text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{path}: cannot read it as JSON: {err}") from None
    except RecursionError:  # a client's document nested thousands deep
        raise ModelLoadError(f"{path}: cannot read it as JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{path}: must hold a JSON object, got {type(obj).__name__}")
    return obj


def _tensors(top: _Reader, key: str) -> tuple[TensorConfig, ...]:
    entries = top.list_(key, []) or []
    result: list[TensorConfig] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ModelLoadError(f"{top.path}: key '{key}[{i}]' must be an object with a name")
        tensor = _Reader(top.path, entry, f"{key}[{i}].")
        tensor.refuse_unknown(layout.TENSOR_KEYS)
        name = tensor.str_("name", "")
        datatype = tensor.str_("datatype", None, DATATYPES) if "datatype" in entry else None
        dims = tensor.ints("dims", -1) if "dims" in entry else None
        if dims is not None and 0 in dims:
            raise tensor.error("dims", "a list of -1 (variable) or sizes >= 1")
        if any(t.name == name for t in result):
            raise ModelLoadError(f"{top.path}: key '{key}' lists '{name}' twice")
        if "format" in entry and key != "inputs":
            raise ModelLoadError(f"{top.path}: key '{key}[{i}].format': only inputs have a format")
        tensor_format = tensor.str_("format", None, layout.INPUT_FORMATS)
        assert name is not None
        result.append(TensorConfig(name, datatype, dims, _reshape(tensor, dims), tensor_format))
    return tuple(result)


def _reshape(tensor: _Reader, dims: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """`reshape: {"shape": [...]}` as Triton writes it; it says what `dims` become, so it needs them."""
    reader = tensor.object("reshape")
    if reader is None:
        return None
    reader.refuse_unknown(("shape",))
    if not isinstance(reader.obj.get("shape"), list):
        raise reader.error("shape", "a list of the graph's dims per item (without the batch axis)")
    shape = reader.ints("shape", -1)
    if 0 in shape:
        raise reader.error("shape", "a list of -1 (variable) or sizes >= 1")
    if dims is None:
        raise tensor.error("reshape", "given with 'dims' (the shape clients send or get, which it reshapes)")
    return shape


def _dynamic_batching(top: _Reader) -> DynamicBatching | None:
    if "dynamic_batching" in top.obj and top.obj["dynamic_batching"] is None:
        return None
    reader = top.object("dynamic_batching")
    if reader is None:
        return DynamicBatching()
    reader.refuse_unknown(layout.DYNAMIC_BATCHING_KEYS)
    default = DynamicBatching()
    return DynamicBatching(
        max_queue_delay_us=reader.int_("max_queue_delay_us", default.max_queue_delay_us, 0),
        preferred_batch_sizes=tuple(sorted(set(reader.ints("preferred_batch_sizes", 1)))),
        max_queue_size=reader.int_("max_queue_size", default.max_queue_size, 1),
        wait_when_idle=reader.bool_("wait_when_idle", default.wait_when_idle),
        latency_budget_ms=reader.int_("latency_budget_ms", default.latency_budget_ms, 0),
    )


def _session(top: _Reader) -> SessionOptions:
    reader = top.object("session")
    if reader is None:
        return SessionOptions()
    reader.refuse_unknown(layout.SESSION_KEYS)
    default = SessionOptions()
    level = reader.str_("graph_optimization_level", default.graph_optimization_level, OPTIMIZATION_LEVELS)
    assert level is not None
    return SessionOptions(
        intra_op_threads=reader.int_("intra_op_threads", default.intra_op_threads, 0),
        inter_op_threads=reader.int_("inter_op_threads", default.inter_op_threads, 0),
        graph_optimization_level=level,
        allow_spinning=reader.bool_("allow_spinning", default.allow_spinning),
        inline_run_max_us=reader.int_("inline_run_max_us", default.inline_run_max_us, 0),
    )


def _providers(top: _Reader, allowed: Sequence[str]) -> tuple[str, ...]:
    """The model's preference restricted to what the server allows; the server's order when the model has none."""
    wanted = top.list_("execution_providers")
    if wanted is None:
        return tuple(allowed)
    if not wanted or any(p not in PROVIDERS for p in wanted):
        raise top.error("execution_providers", f"a non-empty list drawn from {', '.join(PROVIDERS)}")
    return tuple(p for p in wanted if p in allowed) or tuple(allowed)


def _version_policy(top: _Reader) -> dict[str, Any]:
    try:
        return layout.parse_version_policy(top.obj.get("version_policy"))
    except ValueError as err:
        raise ModelLoadError(f"{top.path}: {err}") from None


def _free_form(top: _Reader, key: str) -> dict[str, Any]:
    reader = top.object(key)
    return dict(reader.obj) if reader is not None else {}


def _parameters(top: _Reader) -> dict[str, str]:
    params = _free_form(top, "parameters")
    for key, value in params.items():
        if isinstance(value, (dict, list)) or value is None:
            raise ModelLoadError(
                f"{top.path}: key 'parameters.{key}' must be a string or number, got {json.dumps(value)}"
            )
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()}


def _labels(model_dir: Path, labels_file: str, config_path: Path) -> tuple[str, ...]:
    path = (model_dir / labels_file).resolve()
    if not path.is_relative_to(model_dir.resolve()):
        raise ModelLoadError(f"{config_path}: key 'labels_file' must name a file inside the model folder")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"{config_path}: key 'labels_file': cannot read {labels_file}: {err}") from None
    return tuple(line.strip() for line in text.splitlines())
