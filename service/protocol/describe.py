"""Describes loaded models in the protocol's terms: ModelMetadata, Triton's ModelConfig, repository index entries.

Two shape conventions meet here: ModelMetadata keeps the batch axis as -1 (perf_analyzer drops it when
max_batch_size > 0), ModelConfig omits it (Triton's `dims`). Both show the shape clients send and get; where the
graph's differs (a config `reshape`, or a per-item scalar: graph [-1], clients [-1, 1]), ModelConfig adds Triton's
`reshape` with the graph's shape per item, as Triton reports it (reshape [] for a scalar; none for a non-batching
model's scalar, whose empty reshape Triton refuses). perf_analyzer needs the unit axis: it refuses an input whose
per-item shape is empty ("unable to set shape for the input").

Value ranges: ModelConfig's parameters state `input_range` (the image input's values, derived from the preprocessing
recipe: "0,1" for pixels, or a note that mean/std normalise them) and `output_range` (a generator's image output,
from postprocessing), so a generic client knows what to send without our SDK. KServe v2's ModelMetadataResponse has
no parameters, per model or per tensor, so ModelMetadata cannot carry them.
"""

from __future__ import annotations

import json
from typing import Any

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.contracts import imaging, layout
from cnnserve.service.types import ModelSpec, TensorSpec
from cnnserve.service.wire.decode import triton_data_type

BACKEND = "onnxruntime"


def tensor_metadata(tensor: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))


def model_metadata(spec: ModelSpec, versions: list[int]) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(
        name=spec.name,
        versions=[str(v) for v in sorted(versions)],
        platform=spec.platform or layout.PLATFORM,
        inputs=[tensor_metadata(t) for t in spec.inputs],
        outputs=[tensor_metadata(t) for t in spec.outputs],
    )


def _item_dims(spec: ModelSpec, tensor: TensorSpec) -> tuple[list[int], list[int] | None]:
    """Per-item dims for Triton's config, and its reshape: the graph's shape per item, where it differs."""
    batching = spec.max_batch_size > 0
    dims = list(tensor.shape[1:] if batching else tensor.shape)
    if tensor.model_shape is None:
        return dims, None
    reshape = list(tensor.model_shape[1:] if batching else tensor.model_shape)
    return dims, reshape if reshape or batching else None


def model_config(spec: ModelSpec, provider: str, labels_file: str | None) -> pb.ModelConfig:
    on_gpu = provider.startswith(("CUDA", "Tensorrt"))
    config = pb.ModelConfig(
        name=spec.name,
        platform=spec.platform or layout.PLATFORM,
        backend=BACKEND,
        max_batch_size=spec.max_batch_size,
        default_model_filename="model.onnx",
    )
    _set_version_policy(config, spec)
    for tensor in spec.inputs:
        dims, reshape = _item_dims(spec, tensor)
        entry = config.input.add(name=tensor.name, data_type=triton_data_type(tensor.datatype), dims=dims)
        if tensor.format is not None:
            entry.format = pb.ModelInput.Format.Value(f"FORMAT_{tensor.format}")
        if reshape is not None:
            entry.reshape.shape.extend(reshape)
    for tensor in spec.outputs:
        dims, reshape = _item_dims(spec, tensor)
        output = config.output.add(name=tensor.name, data_type=triton_data_type(tensor.datatype), dims=dims)
        if reshape is not None:
            output.reshape.shape.extend(reshape)
        if labels_file and tensor.name == spec.label_output:
            output.label_filename = labels_file
    config.instance_group.add(
        name=f"{spec.name}_0",
        count=spec.instance_count,
        kind=pb.ModelInstanceGroup.KIND_GPU if on_gpu else pb.ModelInstanceGroup.KIND_CPU,
    )
    if spec.dynamic_batching is not None and spec.max_batch_size > 0:
        batching = spec.dynamic_batching
        config.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)
        config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us
    _set_warmup(config, spec)
    # Pre- and postprocessing hints travel as JSON in the config's parameters, so clients never repeat them.
    hints = {
        key: json.dumps(value)
        for key, value in (
            (layout.PREPROCESSING_PARAMETER, spec.preprocessing),
            (layout.POSTPROCESSING_PARAMETER, spec.postprocessing),
        )
        if value
    }
    # A range the config's own parameters state wins: it may describe a model whose recipe says nothing.
    # The labels too: the classification extension names only a [batch, classes] output's classes, and other
    # outputs (per-pixel or per-box classes) may index the same labels file.
    if spec.labels:
        hints[layout.LABELS_PARAMETER] = json.dumps(list(spec.labels))
    parameters = {**value_ranges(spec), **spec.parameters, **hints, "execution_provider": provider}
    for key, value in parameters.items():
        config.parameters[key].string_value = str(value)
    return config


def value_ranges(spec: ModelSpec) -> dict[str, str]:
    """`input_range` from the preprocessing recipe and `output_range` from the postprocessing range, where the
    config has them."""
    ranges: dict[str, str] = {}
    recipe = spec.image_input.preprocessing if spec.image_input is not None else _recipe(spec.preprocessing)
    if recipe is not None:
        ranges["input_range"] = imaging.range_parameter(recipe.value_range)
    if spec.image_output is not None:
        ranges["output_range"] = imaging.range_parameter(spec.image_output.value_range)
    elif _is_range(declared := spec.postprocessing.get("range")):
        ranges["output_range"] = imaging.range_parameter(declared)
    return ranges


def _recipe(hints: dict[str, Any]) -> imaging.Preprocessing | None:
    """The recipe of hints that only advise clients (input_format "tensor"); None when they make no image."""
    if "height" not in hints or "width" not in hints:
        return None
    try:
        return imaging.Preprocessing.from_hints(hints)
    except ValueError:
        return None  # hints the server never checks (input_format "tensor") state no range rather than fail


def _is_range(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
            and value[1] > value[0])  # fmt: skip


def _set_version_policy(config: pb.ModelConfig, spec: ModelSpec) -> None:
    policy = spec.version_policy  # normal form (layout.parse_version_policy): exactly one kind, its keys present
    if "all" in policy:
        config.version_policy.all.SetInParent()
    elif "specific" in policy:
        config.version_policy.specific.versions.extend(policy["specific"]["versions"])
    else:
        config.version_policy.latest.num_versions = policy["latest"]["num_versions"]


def _set_warmup(config: pb.ModelConfig, spec: ModelSpec) -> None:
    """The config's own warm-up samples, as Triton shows them (not the server's own, made when there are none)."""
    for sample in spec.model_warmup:
        shown = config.model_warmup.add(name=sample.name, batch_size=sample.batch_size, count=sample.count)
        for name, given in sample.inputs:
            entry = shown.inputs[name]
            entry.data_type = triton_data_type(given.datatype)
            entry.dims.extend(given.dims)
            if given.source == "input_data_file":
                entry.input_data_file = given.file
            else:
                setattr(entry, given.source, True)
