"""A model's own warm-up samples: config.json's `model_warmup`, in Triton's form (model_config.proto's ModelWarmup),
read with the rest of the config, checked against the graph, and turned into the feeds the runtime runs.

    "model_warmup": [{"name": "sample", "batch_size": 2, "count": 1,
                      "inputs": {"INPUT0": {"data_type": "TYPE_STRING", "dims": [16], "input_data_file": "in0"}}}]

Each input's data is `zero_data` (zeros; empty strings for BYTES, Triton's four zero bytes per element),
`random_data` (random values; BYTES fall back to zero data, as in Triton) or `input_data_file`, a file below the
model folder's `warmup/` (where Triton looks: beside the version folders) in the protocol's raw form: row-major
little-endian values, or for BYTES each element's 4-byte length then its bytes. A sample of batch size 0 is skipped;
others run `count` times (at least once) with every input repeated per item. Any failure fails the version's load,
naming the sample, as Triton fails it; without samples the server warms the model up on data of its own making
(execution/runtime.py), whose failure only warns.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.contracts import wire
from cnnserve.contracts.datatypes import DATATYPES
from cnnserve.service.errors import ModelLoadError
from cnnserve.service.execution.runtime import WarmupFeed
from cnnserve.service.types import ModelSpec, TensorSpec, WarmupInput, WarmupSample

logger = logging.getLogger(__name__)

FOLDER = "warmup"
"""Below the model folder: where input_data_file names its files (Triton's kWarmupDataFolder)."""
SAMPLE_KEYS = ("name", "batch_size", "inputs", "count")
INPUT_KEYS = ("data_type", "dims", "zero_data", "random_data", "input_data_file")
SOURCES = ("zero_data", "random_data", "input_data_file")

# Triton's enum names (TYPE_FP32, TYPE_STRING) and the protocol's (FP32, BYTES) both name a datatype.
_DATATYPES: Mapping[str, str] = {
    **{pb.DataType.Name(info.triton): name for name, info in DATATYPES.items()},
    **{name: name for name in DATATYPES},
}


def read_samples(path: Path, value: Any) -> tuple[WarmupSample, ...]:
    """config.json's `model_warmup` (None: absent) as samples; ModelLoadError naming the file and key otherwise.
    Only the file is checked here: the graph is checked by `feeds`."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ModelLoadError(f"{path}: key 'model_warmup' must be a list of samples, got {type(value).__name__}")
    return tuple(_sample(path, f"model_warmup[{index}]", entry) for index, entry in enumerate(value))


def _sample(path: Path, key: str, entry: Any) -> WarmupSample:
    fields = _object(path, key, entry, SAMPLE_KEYS)
    name = fields.get("name", "")
    if not isinstance(name, str):
        raise _error(path, f"{key}.name", "a string", name)
    inputs = _object(path, f"{key}.inputs", fields.get("inputs", {}), None)
    return WarmupSample(
        name=name or key,
        batch_size=_count(path, f"{key}.batch_size", fields.get("batch_size", 0)),
        inputs=tuple(
            (input_name, _input(path, f"{key}.inputs.{input_name}", spec)) for input_name, spec in inputs.items()
        ),
        count=max(1, _count(path, f"{key}.count", fields.get("count", 0))),
    )


def _input(path: Path, key: str, entry: Any) -> WarmupInput:
    fields = _object(path, key, entry, INPUT_KEYS)
    datatype = _DATATYPES.get(fields.get("data_type"))  # type: ignore[arg-type]
    if datatype is None:
        raise _error(path, f"{key}.data_type", f"one of {', '.join(_DATATYPES)}", fields.get("data_type"))
    dims = fields.get("dims", [])
    if not isinstance(dims, list):
        raise _error(path, f"{key}.dims", "a list of sizes >= 0 (every variable dimension given)", dims)
    sizes = tuple(_count(path, f"{key}.dims", dim, "a list of sizes >= 0 (every variable dimension given)")
                  for dim in dims)  # fmt: skip
    sources = [source for source in SOURCES if source in fields]
    if len(sources) != 1:
        raise ModelLoadError(f"{path}: key '{key}' needs exactly one of {', '.join(SOURCES)}, got {sources or 'none'}")
    file = fields.get("input_data_file", "")
    if sources[0] == "input_data_file" and (not isinstance(file, str) or not file or Path(file).is_absolute()):
        raise _error(path, f"{key}.input_data_file", f"a file name relative to the model folder's {FOLDER}/", file)
    return WarmupInput(datatype, sizes, sources[0], file)


def _object(path: Path, key: str, value: Any, allowed: tuple[str, ...] | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _error(path, key, "an object", value)
    unknown = sorted(set(value) - set(allowed)) if allowed is not None else []
    if unknown:
        raise ModelLoadError(f"{path}: unknown key '{key}.{unknown[0]}'; expected one of {', '.join(allowed or ())}")
    return value


def _count(path: Path, key: str, value: Any, rule: str = "an integer >= 0") -> int:
    """A uint32 or int64 of Triton's config: a JSON number, or a decimal string as protobuf's JSON writes int64s."""
    if isinstance(value, str) and value.isascii() and value.isdecimal():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _error(path, key, rule, value)
    return value


def _error(path: Path, key: str, rule: str, value: Any) -> ModelLoadError:
    return ModelLoadError(f"{path}: key '{key}' must be {rule}, got {value!r:.80}")


# -- against the graph --------------------------------------------------------------------------------------------


def feeds(spec: ModelSpec, model_dir: Path) -> list[WarmupFeed]:
    """The spec's samples as feeds at their batch sizes, every input checked against the graph's and every file read;
    ModelLoadError naming the sample otherwise. Runs in the loading thread (it reads files)."""
    rng = np.random.default_rng(0)  # random_data alike on every load: a failure it causes happens every time
    built = []
    for sample in spec.model_warmup:
        if sample.batch_size == 0:
            logger.info("event=warmup_sample_skipped model=%s sample=%s reason=batch_size_0", spec.name, sample.name)
            continue
        where = f"model '{spec.name}': warmup sample '{sample.name}'"
        largest = spec.max_batch_size if spec.max_batch_size > 0 else 1
        if sample.batch_size > largest:
            raise ModelLoadError(f"{where}: batch_size {sample.batch_size} is over the model's {largest}")
        given = dict(sample.inputs)
        for name in given:
            if name not in spec.inputs_by_name:
                raise ModelLoadError(f"{where}: '{name}' is not an input (inputs: {_names(spec)})")
        feed = {}
        for tensor in spec.inputs:
            item = given.get(tensor.name)
            if item is None:
                raise ModelLoadError(f"{where}: gives no data for input '{tensor.name}' (inputs: {_names(spec)})")
            data = _item(where, spec, tensor, item, model_dir, rng)
            feed[tensor.name] = np.repeat(data[np.newaxis], sample.batch_size, axis=0) if spec.max_batch_size else data
        built.append(WarmupFeed(sample.name, sample.batch_size, feed, runs=sample.count))
    return built


def _names(spec: ModelSpec) -> str:
    return ", ".join(f"'{t.name}'" for t in spec.inputs)


def _item(where: str, spec: ModelSpec, tensor: TensorSpec, given: WarmupInput, model_dir: Path,
          rng: np.random.Generator) -> npt.NDArray[Any]:  # fmt: skip
    """One item's data for `tensor` (its whole data when the model does not batch)."""
    where = f"{where}, input '{tensor.name}'"
    if given.datatype != tensor.datatype:
        raise ModelLoadError(f"{where}: data_type {given.datatype}, but the model's input is {tensor.datatype}")
    wanted = tensor.shape[1:] if spec.max_batch_size > 0 else tensor.shape
    dims = given.dims
    if not wanted and dims == (1,):  # a per-item scalar, described to Triton clients as dims [1] (describe.py)
        dims = ()
    if len(dims) != len(wanted) or any(want >= 0 and got != want for got, want in zip(dims, wanted, strict=True)):
        raise ModelLoadError(f"{where}: dims {list(given.dims)} do not fit the input's {list(wanted)}")
    info = DATATYPES[tensor.datatype]
    count = int(np.prod(dims, dtype=np.int64))
    if given.source == "input_data_file":
        return _from_file(where, model_dir, given.file, info.name, info.numpy, dims, count)
    if given.source == "zero_data" or info.name == "BYTES":  # random BYTES fall back to zero data, as in Triton
        return np.full(dims, b"", dtype=object) if info.name == "BYTES" else np.zeros(dims, info.numpy)
    if info.name == "BOOL":
        return rng.integers(0, 2, dims).astype(bool)
    if info.numpy.kind == "f":
        return rng.standard_normal(dims).astype(info.numpy)
    limits = np.iinfo(info.numpy)
    return rng.integers(limits.min, limits.max, dims, dtype=info.numpy, endpoint=True)


def _from_file(where: str, model_dir: Path, name: str, datatype: str, dtype: np.dtype[Any], dims: tuple[int, ...],
               count: int) -> npt.NDArray[Any]:  # fmt: skip
    folder = (model_dir / FOLDER).resolve()
    path = (folder / name).resolve()
    if not path.is_relative_to(folder):  # ".." or a link out: the config must not make the server read any file
        raise ModelLoadError(f"{where}: input_data_file '{name}' leads out of the model folder's {FOLDER}/")
    needed = count * dtype.itemsize
    try:
        with path.open("rb") as file:
            data = file.read() if datatype == "BYTES" else file.read(needed)
    except OSError as err:
        raise ModelLoadError(f"{where}: cannot read {FOLDER}/{name}: {err.strerror}") from None
    if datatype == "BYTES":
        try:
            items = wire.unpack_bytes(data, count)
        except ValueError as err:
            raise ModelLoadError(f"{where}: {FOLDER}/{name}: {err}") from None
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(dims)
    if len(data) < needed:  # Triton's rule: at least what the dims need; more is ignored
        raise ModelLoadError(f"{where}: expects {needed} bytes, but {FOLDER}/{name} has only {len(data)}")
    array = np.frombuffer(data, dtype=dtype).reshape(dims)
    if datatype == "BOOL" and bool((array.view(np.uint8) > 1).any()):
        raise ModelLoadError(f"{where}: {FOLDER}/{name}: BOOL bytes must be 0 or 1")
    return array
