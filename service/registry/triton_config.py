"""Triton's ModelConfig -> config.json: one translation for a model folder's config.pbtxt (protobuf text format) and a
load request's config in Triton's JSON form, so a model folder or a client that worked with Triton needs no rewrite.

The text or JSON is parsed into the ModelConfig message (proto/grpc_service.proto: Triton's field names and numbers),
Triton's own rules for it are checked, naming its keys, and the result is a config.json document that model_config.py
then checks and completes from the graph like any other. Its dims stay per item, as Triton's: max_batch_size may be
left to the graph (Triton's ONNX Runtime backend decides it there too), so the batch axis is added once it is known.

A field cnnserve cannot honour is refused when it changes what the model answers or what runs (sequence batching,
ensembles, other platforms) and ignored with a note for the log when it only tunes how it runs (optimization, queue
timeouts); docs/model-repository.md ("Bringing a Triton model folder") has the table. Our message reserves the
numbers of the Triton fields cnnserve does not offer, so protobuf's parsers cannot read them: those are picked out by
name first (for text, by text_fields.py, in a pass over the top-level fields with protobuf's own tokenizer) and
refused or noted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.message import Message

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.contracts import layout
from cnnserve.contracts.datatypes import DATATYPES
from cnnserve.service.errors import ModelLoadError
from cnnserve.service.registry import text_fields

FILE = layout.TRITON_CONFIG_FILE
PLATFORMS = ("", layout.PLATFORM)
BACKENDS = ("", "onnxruntime")
SESSION_PARAMETERS: Mapping[str, str] = {
    "intra_op_thread_count": "intra_op_threads",
    "inter_op_thread_count": "inter_op_threads",
}
"""Model parameters Triton's ONNX Runtime backend reads as session options, and config.json's `session` keys."""

_DATATYPES: Mapping[int, str] = {info.triton: name for name, info in DATATYPES.items()}

_UNOFFERED: Mapping[str, tuple[bool, str]] = {
    "sequence_batching": (True, "stateful sequence models are not served: cnnserve has no sequence batcher to keep "
                          "a sequence's requests and state together"),
    "ensemble_scheduling": (True, "ensembles are not served: a cnnserve model is one ONNX graph"),
    "batch_input": (True, "ragged batching's batch inputs are not made"),
    "batch_output": (True, "ragged batching's batch outputs are not made"),
    "model_operations": (True, "custom operator libraries are not loaded into the server"),
    "model_repository_agents": (True, "repository agents (checksum, decryption) are not run, so the files would be "
                                "served unchecked or undecrypted"),
    "optimization": (False, "graph level, execution accelerators, pinned memory, CUDA graphs and priority are not "
                     "applied (config.json's session.graph_optimization_level sets ONNX Runtime's level)"),
    "model_metrics": (False, "metric histograms are not configured; cnnserve's own metrics apply"),
}  # fmt: skip
"""Triton's ModelConfig fields our message leaves out: (refused, why). Refused ones change what the model answers or
what runs; the others only tune how it runs. Given empty they count as absent (Triton's own JSON writes
`batch_input: []`), but for these two, which an empty message turns on:"""
_PRESENCE_COUNTS = ("sequence_batching", "ensemble_scheduling")

_FLAGS: Mapping[str, str] = {
    "is_shape_tensor": "shape tensors are TensorRT's",
    "allow_ragged_batch": "ragged batching is not done: a batch's items share one shape",
    "optional": "every input is required: a request without it would be refused",
    "is_non_linear_format_io": "non-linear formats are TensorRT's",
}
"""ModelInput / ModelOutput switches that change what a request or an answer is: refused when on."""

_GROUP_HINTS = ("gpus", "rate_limiter", "secondary_devices", "profile", "passive", "host_policy")
_GPU_PROVIDERS = ("cuda", "cpu")  # Triton's ONNX Runtime backend runs a KIND_GPU instance on CUDA


def _camel(name: str) -> str:
    """A field's JSON name, which json_format accepts beside the proto name."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _names(descriptor: Any, extra: tuple[str, ...] = ()) -> frozenset[str]:
    names = [f.name for f in descriptor.fields] + list(extra)
    return frozenset(names) | {_camel(name) for name in names}


_UNOFFERED_KEYS: Mapping[str, str] = {key: name for name in _UNOFFERED for key in (name, _camel(name))}
_TRITON_ONLY = _names(pb.ModelConfig.DESCRIPTOR, tuple(_UNOFFERED)) - layout.CONFIG_KEYS
_OURS_ONLY = layout.CONFIG_KEYS - _names(pb.ModelConfig.DESCRIPTOR, tuple(_UNOFFERED))
_TRITON_BATCHING = _names(pb.ModelDynamicBatching.DESCRIPTOR) - set(layout.DYNAMIC_BATCHING_KEYS)


@dataclass(frozen=True)
class Translated:
    document: dict[str, Any]
    """config.json's keys, with each tensor's dims and reshape per item (without the batch axis), as Triton's."""
    notes: tuple[str, ...]
    """Fields given but not honoured, one line each, for the log."""


# -- telling the two JSON forms apart -------------------------------------------------------------------------------


def is_triton_document(obj: Mapping[str, Any], where: Path) -> bool:
    """Whether a load request's JSON is Triton's ModelConfig (keys only it has: input, output, instance_group, ...;
    dynamic_batching's max_queue_delay_microseconds; parameters as {"string_value": ...}) rather than a config.json
    document; one with only keys both share reads as config.json. ModelLoadError for a document that mixes both."""
    triton = [key for key in obj if key in _TRITON_ONLY]
    ours = [key for key in obj if key in _OURS_ONLY]
    batching = obj.get("dynamic_batching")
    if isinstance(batching, dict):
        triton += [f"dynamic_batching.{key}" for key in batching if key in _TRITON_BATCHING]
        ours += [f"dynamic_batching.{key}" for key in batching if key in layout.DYNAMIC_BATCHING_KEYS]
    parameters = obj.get("parameters")
    if isinstance(parameters, dict):
        for key, value in parameters.items():
            (triton if isinstance(value, dict) else ours).append(f"parameters.{key}")
    if triton and ours:
        raise ModelLoadError(
            f"{where}: mixes Triton's ModelConfig ('{triton[0]}') with config.json ('{ours[0]}'); send one or the "
            "other, whole (docs/model-repository.md)"
        )
    return bool(triton)


# -- reading ----------------------------------------------------------------------------------------------------------


def read_json(obj: Mapping[str, Any], where: Path, model_dir: Path) -> Translated:
    """Triton's ModelConfig as JSON, as tritonclient's load_model(config=...) sends it; errors name `where`."""
    notes: list[str] = []
    kept: dict[str, Any] = {}
    for key, value in obj.items():
        name = _UNOFFERED_KEYS.get(key)
        if name is None:
            kept[key] = value
        elif value is not None and (name in _PRESENCE_COUNTS or not _vacant(value)):
            _unoffered(name, where, notes)
    config = pb.ModelConfig()
    try:
        json_format.ParseDict(kept, config)
    except json_format.ParseError as err:
        raise ModelLoadError(f"{where}: {str(err).splitlines()[0]}") from None
    return _translate(config, where, model_dir, notes)


def read_text(text: str, where: Path, model_dir: Path) -> Translated:
    """A config.pbtxt's text; errors name `where`, and the line and column for one the parser finds."""
    lines = text.split("\n")
    notes: list[str] = []
    try:
        for name, start, end, empty in text_fields.top_level(lines):
            if name in _UNOFFERED:
                if name in _PRESENCE_COUNTS or not empty:
                    _unoffered(name, where, notes, line=start[0] + 1)
                text_fields.blank(lines, start, end)
        config = text_format.Parse("\n".join(lines), pb.ModelConfig())
    except text_format.ParseError as err:
        raise ModelLoadError(f"{where}: {text_fields.located(err)}") from None
    except RecursionError:
        raise ModelLoadError(f"{where}: cannot read it: nested too deeply") from None
    return _translate(config, where, model_dir, notes)


def _vacant(value: Any) -> bool:
    """Nothing but defaults: null, false, 0, "", or lists and objects of those."""
    if isinstance(value, dict):
        return all(_vacant(v) for v in value.values())
    if isinstance(value, list):
        return all(_vacant(v) for v in value)
    return not value


def _unoffered(name: str, where: Path, notes: list[str], line: int | None = None) -> None:
    refused, why = _UNOFFERED[name]
    if refused:
        at = f" (line {line})" if line is not None else ""
        raise ModelLoadError(f"{where}: key '{name}'{at} is not supported: {why}")
    notes.append(f"{name}: ignored; {why}")


# -- translating ------------------------------------------------------------------------------------------------------


def _translate(config: pb.ModelConfig, where: Path, model_dir: Path, notes: list[str]) -> Translated:
    _check_platform(config, where)
    if config.max_batch_size < 0:
        raise ModelLoadError(
            f"{where}: key 'max_batch_size' must be 0 (no batching) or more, got {config.max_batch_size}"
        )
    # Triton's ONNX Runtime backend completes a config that leaves out inputs or outputs, max_batch_size 0 included
    # (AutoCompleteMaxBatch: 4 when every graph tensor has a variable first axis); one that lists both is taken as is.
    batching: bool | None = True if config.max_batch_size > 0 else None
    if config.input and config.output:
        batching = config.max_batch_size > 0
    document: dict[str, Any] = {}
    if config.name:
        document["name"] = config.name
    if batching is not None:
        document["max_batch_size"] = config.max_batch_size
    document["inputs"] = _tensors("input", config.input, where, batching)
    document["outputs"] = _tensors("output", config.output, where, batching)
    document.update(_labels(config, where, model_dir))
    policy = config.version_policy
    if policy.HasField("latest"):
        document["version_policy"] = {"latest": {"num_versions": policy.latest.num_versions}}
    elif policy.HasField("all"):
        document["version_policy"] = {"all": {}}
    elif policy.HasField("specific"):
        document["version_policy"] = {"specific": {"versions": list(policy.specific.versions)}}
    if config.HasField("dynamic_batching"):
        if batching is False:
            notes.append("dynamic_batching: ignored; max_batch_size 0 makes no batches")
        else:
            document["dynamic_batching"] = _dynamic_batching(config, where, notes)
    elif batching:
        document["dynamic_batching"] = None  # Triton's default scheduler: each request runs by itself
    document.update(_instances(config, where, notes))
    document.update(_parameters(config, where))
    if config.model_warmup:
        document["model_warmup"] = [
            json_format.MessageToDict(sample, preserving_proto_field_name=True) for sample in config.model_warmup
        ]
    _check_rest(config, where, notes)
    return Translated(document, tuple(notes))


def _check_platform(config: pb.ModelConfig, where: Path) -> None:
    wanted = f"cnnserve serves ONNX models on ONNX Runtime: platform '{layout.PLATFORM}' or backend 'onnxruntime'"
    for key, value, allowed in (("platform", config.platform, PLATFORMS), ("backend", config.backend, BACKENDS)):
        if value not in allowed:
            why = "ensembles are not served: a cnnserve model is one ONNX graph" if value == "ensemble" else wanted
            raise ModelLoadError(f"{where}: key '{key}' is '{value}': {why}")
    if config.runtime and "onnxruntime" not in config.runtime:
        raise ModelLoadError(f"{where}: key 'runtime' is '{config.runtime}': {wanted}")


def _tensors(kind: str, entries: Any, where: Path, batching: bool | None) -> list[dict[str, Any]]:
    """Triton's rules first (core's ValidateIOShape: name, data_type and dims given, dims -1 or >= 1, no empty
    reshape without a batch axis), naming the key; model_config.py checks the rest against the graph."""
    result: list[dict[str, Any]] = []
    for index, tensor in enumerate(entries):
        key = f"{kind}[{index}]"
        if not tensor.name:
            raise ModelLoadError(f"{where}: key '{key}.name' must be given")
        if any(entry["name"] == tensor.name for entry in result):
            raise ModelLoadError(f"{where}: key '{kind}' lists '{tensor.name}' twice")
        label = f"{where}: key '{key}' ({kind} '{tensor.name}')"
        if tensor.data_type == pb.TYPE_INVALID:
            raise ModelLoadError(f"{label} must give data_type")
        datatype = _DATATYPES.get(tensor.data_type)
        if datatype is None:
            served = ", ".join(pb.DataType.Name(DATATYPES[name].triton) for name in DATATYPES)
            raise ModelLoadError(f"{label}: data_type {pb.DataType.Name(tensor.data_type)} is not served ({served})")
        dims = list(tensor.dims)
        if not dims:
            raise ModelLoadError(f"{label} must give dims")
        if any(dim < 1 and dim != -1 for dim in dims):
            raise ModelLoadError(f"{label}: dims {dims} must each be an integer >= 1, or -1 (variable)")
        entry: dict[str, Any] = {"name": tensor.name, "datatype": datatype, "dims": dims}
        if tensor.HasField("reshape"):
            shape = list(tensor.reshape.shape)
            if any(dim < 1 and dim != -1 for dim in shape):
                raise ModelLoadError(f"{label}: reshape.shape {shape} must each be an integer >= 1, or -1 (variable)")
            if not shape and batching is False:
                raise ModelLoadError(f"{label}: an empty reshape needs a batch axis (max_batch_size 0 has none)")
            entry["reshape"] = {"shape": shape}
        for flag, why in _FLAGS.items():
            if getattr(tensor, flag, False):
                raise ModelLoadError(f"{label}: {flag} is not supported: {why}")
        if getattr(tensor, "format", pb.ModelInput.FORMAT_NONE) != pb.ModelInput.FORMAT_NONE:
            entry["format"] = pb.ModelInput.Format.Name(tensor.format).removeprefix("FORMAT_")
        result.append(entry)
    return result


def _labels(config: pb.ModelConfig, where: Path, model_dir: Path) -> dict[str, str]:
    """output.label_filename: config.json's labels_file and label_output, which allow one labelled output."""
    labelled = [(index, output) for index, output in enumerate(config.output) if output.label_filename]
    if not labelled:
        return {}
    if len(labelled) > 1:
        raise ModelLoadError(
            f"{where}: key 'output[{labelled[1][0]}].label_filename': cnnserve reads one labels file per model, and "
            f"output '{labelled[0][1].name}' names one already"
        )
    index, output = labelled[0]
    path = model_dir / output.label_filename
    if Path(output.label_filename).is_absolute() or not path.resolve().is_relative_to(model_dir.resolve()):
        raise ModelLoadError(f"{where}: key 'output[{index}].label_filename' must name a file in the model folder")
    if not path.is_file():
        raise ModelLoadError(
            f"{where}: key 'output[{index}].label_filename' names '{output.label_filename}', which is not a file in "
            "the model folder"
        )
    return {"labels_file": output.label_filename, "label_output": output.name}


def _dynamic_batching(config: pb.ModelConfig, where: Path, notes: list[str]) -> dict[str, Any]:
    batching = config.dynamic_batching
    result: dict[str, Any] = {"max_queue_delay_us": batching.max_queue_delay_microseconds}
    sizes = list(batching.preferred_batch_size)
    largest = config.max_batch_size or None  # None: decided from the graph, which model_config.py checks against
    if any(size < 1 or (largest is not None and size > largest) for size in sizes):
        rule = f"1..{largest} (max_batch_size)" if largest else ">= 1"
        raise ModelLoadError(f"{where}: key 'dynamic_batching.preferred_batch_size' must lie in {rule}, got {sizes}")
    if sizes:
        result["preferred_batch_sizes"] = sizes
    if batching.HasField("default_queue_policy"):
        policy = batching.default_queue_policy
        if policy.max_queue_size:  # 0: unbounded in Triton; cnnserve's bound then stays (config.json's default)
            result["max_queue_size"] = policy.max_queue_size
        if policy.timeout_action or policy.default_timeout_microseconds or policy.allow_timeout_override:
            notes.append("dynamic_batching.default_queue_policy timeouts: ignored; a queued request waits until it "
                         "runs or its own deadline passes")  # fmt: skip
    if batching.preserve_ordering:
        notes.append("dynamic_batching.preserve_ordering: ignored; answers are not held back to keep request order")
    if batching.priority_levels or batching.default_priority_level or batching.priority_queue_policy:
        notes.append("dynamic_batching priority levels: ignored; each model has one queue")
    return result


def _instances(config: pb.ModelConfig, where: Path, notes: list[str]) -> dict[str, Any]:
    """instance_group: the counts add up to config.json's instance_count; the kind picks the execution providers."""
    groups = config.instance_group
    if not groups:
        return {}
    for index, group in enumerate(groups):
        if group.count < 0:
            raise ModelLoadError(f"{where}: key 'instance_group[{index}].count' must be >= 0, got {group.count}")
    result: dict[str, Any] = {"instance_count": sum(max(group.count, 1) for group in groups)}  # Triton: 0 means 1
    kinds = {group.kind for group in groups} - {pb.ModelInstanceGroup.KIND_AUTO}
    if kinds == {pb.ModelInstanceGroup.KIND_CPU}:
        result["execution_providers"] = ["cpu"]
    elif kinds == {pb.ModelInstanceGroup.KIND_GPU}:
        result["execution_providers"] = list(_GPU_PROVIDERS)
        notes.append("instance_group kind KIND_GPU: runs on CUDA where this server offers it, else on the CPU "
                     "(where Triton refuses to load it)")  # fmt: skip
    elif kinds:
        names = ", ".join(sorted(pb.ModelInstanceGroup.Kind.Name(kind) for kind in kinds))
        notes.append(f"instance_group kinds {names}: ignored; the server's execution providers apply")
    hints = sorted({hint for group in groups for hint in _GROUP_HINTS if _given(group, hint)})
    if hints:
        notes.append(f"instance_group {', '.join(hints)}: ignored; every instance runs in this process")
    return result


def _parameters(config: pb.ModelConfig, where: Path) -> dict[str, Any]:
    """parameters as config.json's strings; the ONNX Runtime backend's thread counts as `session` too."""
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    result: dict[str, Any] = {"parameters": parameters} if parameters else {}
    session = {}
    for key, option in SESSION_PARAMETERS.items():
        if key in parameters:
            text = parameters[key].strip()
            if not (text.isascii() and text.isdecimal()):
                raise ModelLoadError(
                    f"{where}: key 'parameters.{key}' must be a number of threads (0: ONNX Runtime's choice), got "
                    f"{parameters[key]!r}"
                )
            session[option] = int(text)
    if session:
        result["session"] = session
    return result


def _check_rest(config: pb.ModelConfig, where: Path, notes: list[str]) -> None:
    if config.default_model_filename not in ("", layout.MODEL_FILE):
        raise ModelLoadError(
            f"{where}: key 'default_model_filename' is '{config.default_model_filename}': cnnserve loads "
            f"<version>/{layout.MODEL_FILE}; rename the file"
        )
    if config.model_transaction_policy.decoupled:
        raise ModelLoadError(
            f"{where}: key 'model_transaction_policy.decoupled' is not supported: each request gets exactly one answer"
        )
    if config.cc_model_filenames:
        notes.append(f"cc_model_filenames: ignored; cnnserve loads <version>/{layout.MODEL_FILE}")
    if config.metric_tags:
        notes.append("metric_tags: ignored; cnnserve's metrics carry their own labels")
    if config.response_cache.enable:
        notes.append("response_cache: ignored; cnnserve caches no answers, so every request runs")


def _given(message: Message, name: str) -> bool:
    field = message.DESCRIPTOR.fields_by_name[name]
    if field.is_repeated:
        return len(getattr(message, name)) > 0
    if field.message_type is not None:
        return message.HasField(name)
    return bool(getattr(message, name))
