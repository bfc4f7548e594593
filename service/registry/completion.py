"""A read config checked against its ONNX graph and completed from it: the second step after model_config.py.

`resolve` fills in what the config leaves out (tensors, max_batch_size, a batch axis) from the graph, and refuses
what contradicts it (dims, datatypes, reshapes, labels), naming the file, key and tensor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from cnnserve.contracts import layout
from cnnserve.service.errors import ModelLoadError
from cnnserve.service.execution import images
from cnnserve.service.registry.model_config import DEFAULT_MAX_BATCH_SIZE, ModelConfig, TensorConfig
from cnnserve.service.types import ModelSpec, TensorSpec

logger = logging.getLogger(__name__)


def resolve(
    config: ModelConfig, graph_inputs: Sequence[TensorSpec], graph_outputs: Sequence[TensorSpec], *, version: int
) -> ModelSpec:
    """The full spec: config.json's tensors checked against the graph's, the ones it omits taken from the graph."""
    where = f"model '{config.name}' version {version}"
    max_batch_size = config.max_batch_size
    if max_batch_size is None:
        batchable = all(t.shape and t.shape[0] == -1 for t in (*graph_inputs, *graph_outputs))
        max_batch_size = DEFAULT_MAX_BATCH_SIZE if batchable else 0
        logger.info("event=max_batch_size_from_graph model=%s version=%d max_batch_size=%d", config.name, version,
                    max_batch_size)  # fmt: skip
    inputs = _merge(where, "input", _batch_axis(config, config.inputs, max_batch_size), graph_inputs, max_batch_size)
    outputs = _merge(where, "output", _batch_axis(config, config.outputs, max_batch_size), graph_outputs,
                     max_batch_size)  # fmt: skip

    batching = config.spec.dynamic_batching
    if max_batch_size == 0 and not config.dynamic_batching_given:
        batching = None
    if batching is not None and any(p > max_batch_size for p in batching.preferred_batch_sizes):
        raise ModelLoadError(
            f"{config.path}: key 'dynamic_batching.preferred_batch_sizes' must lie in 1..{max_batch_size} "
            f"(max_batch_size), got {list(batching.preferred_batch_sizes)}"
        )
    label_output = config.spec.label_output
    if label_output is not None:
        target = next((t for t in outputs if t.name == label_output), None)
        if target is None:
            raise ModelLoadError(
                f"{config.path}: key 'label_output' names '{label_output}', which is not an output of {where} "
                f"(outputs: {', '.join(t.name for t in outputs)})"
            )
        classes = target.shape[-1] if target.shape else 1
        if config.spec.labels and classes != -1 and classes != len(config.spec.labels):
            raise ModelLoadError(
                f"{where}: labels file has {len(config.spec.labels)} labels but output '{label_output}' "
                f"has {classes} classes"
            )
    image_input = images.image_input(config.path, config.spec.preprocessing, inputs, max_batch_size)
    return replace(
        config.spec,
        max_batch_size=max_batch_size,
        inputs=inputs,
        outputs=outputs,
        dynamic_batching=batching,
        image_input=image_input,
        image_output=images.image_output(config.path, config.spec.postprocessing, outputs, max_batch_size),
        optional_outputs=_optional_outputs(config, outputs),
    )


def _batch_axis(config: ModelConfig, tensors: Sequence[TensorConfig], max_batch_size: int) -> Sequence[TensorConfig]:
    """Per-item dims (Triton's) as config.json's: the batch axis first, as -1, when the model batches."""
    if not config.dims_per_item or max_batch_size == 0:
        return tensors
    return [t if t.dims is None else replace(t, dims=(-1, *t.dims)) for t in tensors]


def _optional_outputs(config: ModelConfig, outputs: Sequence[TensorSpec]) -> frozenset[str]:
    """Config parameter optional_outputs: graph outputs, leaving a request that names none something to get."""
    optional = layout.optional_outputs(config.spec.parameters)
    key = f"parameters.{layout.OPTIONAL_OUTPUTS_PARAMETER}"
    names = [t.name for t in outputs]
    unknown = sorted(optional - set(names))
    if unknown:
        raise ModelLoadError(
            f"{config.path}: key '{key}' names {unknown[0]!r}, not an output (outputs: {', '.join(names)})"
        )
    if optional and optional >= set(names):
        raise ModelLoadError(f"{config.path}: key '{key}' names every output; leave at least one not optional")
    return optional


def _merge(
    where: str, kind: str, configured: Sequence[TensorConfig], graph: Sequence[TensorSpec], max_batch_size: int
) -> tuple[TensorSpec, ...]:
    by_name = {t.name: t for t in graph}
    given = {t.name: t for t in configured}
    batching = max_batch_size > 0
    for c in configured:
        g = by_name.get(c.name)
        if g is None:
            names = ", ".join(by_name) or "none"
            raise ModelLoadError(f"{where}: config {kind} '{c.name}' is not in the graph (graph {kind}s: {names})")
        if c.datatype is not None and c.datatype != g.datatype:
            raise ModelLoadError(
                f"{where}: config {kind} '{c.name}' datatype {c.datatype} contradicts the graph's {g.datatype}"
            )
        if c.reshape is not None:
            assert c.dims is not None  # read_config refuses a reshape without dims
            _check_reshape(where, kind, c.name, c.dims, c.reshape, g.shape, batching)
        elif c.dims is not None and not _fits(c.dims, g.shape):
            raise ModelLoadError(
                f"{where}: config {kind} '{c.name}' dims {_dims(c.dims)} contradict the graph's {_dims(g.shape)}"
            )
    merged = []
    for g in graph:
        own = given.get(g.name)
        shape = own.dims if own is not None and own.dims is not None else g.shape
        if batching and (not g.shape or g.shape[0] != -1 or not shape or shape[0] != -1):
            raise ModelLoadError(
                f"{where}: {kind} '{g.name}' dims {_dims(shape)} (graph {_dims(g.shape)}) have no variable batch "
                f"axis, but max_batch_size is {max_batch_size}; batching needs a first dimension of -1"
            )
        model_shape = None
        if own is not None and own.reshape is not None:
            model_shape = ((-1,) if batching else ()) + own.reshape
        elif len(shape) == (1 if batching else 0):
            # A scalar per item: clients send and get it with a unit axis, dims [1] with reshape [] (Triton's
            # completion of such a tensor, and what perf_analyzer needs: it refuses an empty per-item shape).
            shape, model_shape = (*shape, 1), shape
        tensor_format = own.format if own is not None else None
        if tensor_format is not None and len(shape) - (1 if batching else 0) != 3:
            # Triton's rule (ValidateModelInput): an image layout names three dims per item
            raise ModelLoadError(
                f"{where}: config {kind} '{g.name}' format {tensor_format} needs 3 dims per item, got "
                f"{_dims(shape[1:] if batching else shape)}"
            )
        merged.append(TensorSpec(g.name, g.datatype, shape, model_shape, tensor_format))
    return tuple(merged)


def _fits(dims: Sequence[int], graph: Sequence[int]) -> bool:
    """A config may fix a dimension the graph leaves variable, never the other way round."""
    return len(dims) == len(graph) and all(gd == -1 or cd == gd for cd, gd in zip(dims, graph, strict=True))


def _check_reshape(where: str, kind: str, name: str, dims: tuple[int, ...], reshape: tuple[int, ...],
                   graph: tuple[int, ...], batching: bool) -> None:  # fmt: skip
    """Triton's rules (model_config_utils.cc, ValidateIOShape; its ONNX Runtime backend compares the reshape, not
    the dims, with the graph): the reshape fits the graph, and dims and reshape hold the same elements, run by run
    between variable dimensions ([2,4,-1,6] -> [8,-1,1,6]: 2*4 = 8 and 6 = 1*6)."""
    prefix = f"{where}: config {kind} '{name}'"
    if batching and dims[:1] != (-1,):
        return  # no batch axis to set apart: _merge refuses that, naming it
    if not batching and not reshape:
        raise ModelLoadError(f"{prefix} reshape [] (a scalar) needs a batch axis: max_batch_size 0 leaves it no data")
    model = ((-1,) if batching else ()) + reshape
    if not _fits(model, graph):
        raise ModelLoadError(
            f"{prefix} reshape {_dims(reshape)} (the graph's shape per item"
            f"{', after the batch axis' if batching else ''}) contradicts the graph's {_dims(graph)}"
        )
    item = dims[1:] if batching else dims
    if _runs(item) != _runs(reshape):
        raise ModelLoadError(
            f"{prefix} dims {_dims(item)} per item and reshape {_dims(reshape)} hold different numbers of elements "
            "(each run of fixed dimensions between variable ones must match)"
        )


def _runs(shape: Sequence[int]) -> list[int]:
    """Element counts of the runs of fixed dimensions, split at each variable one."""
    runs = [1]
    for dim in shape:
        if dim == -1:
            runs.append(1)
        else:
            runs[-1] *= dim
    return runs


def _dims(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"
