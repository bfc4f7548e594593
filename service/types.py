"""Plain data shared across the service: tensor and model specifications, and the model-state vocabulary.

Shapes here always include the batch dimension: -1 when the model batches (max_batch_size > 0), as ModelMetadata
reports them. ModelConfig (Triton's convention) reports dims without it; the servicer converts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from cnnserve.contracts import layout
from cnnserve.contracts.imaging import Preprocessing


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # Open Inference Protocol name: "FP32", "INT64", "BYTES", ...
    shape: tuple[int, ...]  # -1 marks a variable dimension; the first is the batch axis when batching
    model_shape: tuple[int, ...] | None = None
    """The graph's shape where clients see another (`shape`): Triton's reshape, from the config's `reshape` or for a
    per-item scalar (graph [-1], clients [-1, 1]). None: the same. The batch axis as in `shape`. The served model
    (registry/served.py) turns request tensors into this shape and answers back into `shape`; everything above it
    (metadata, validation, kinds) sees `shape` only."""
    format: str | None = None  # inputs: "NCHW" | "NHWC", Triton's input format, a hint ModelConfig shows to clients

    @property
    def runtime_shape(self) -> tuple[int, ...]:
        """The shape ONNX Runtime is fed or answers."""
        return self.shape if self.model_shape is None else self.model_shape


def reshaped(
    shape: tuple[int, ...], source: tuple[int, ...], target: tuple[int, ...], batched: bool
) -> tuple[int, ...]:
    """An array's `shape`, which follows `source`, as `target` says (Triton's reshape, either way): each variable
    (-1) dimension of the target takes the array's value at the source's next variable dimension; the batch axis
    stays. The config check (registry/model_config.py) made both sides hold the same elements."""
    start = 1 if batched else 0
    variable = iter([dim for dim, declared in zip(shape[start:], source[start:], strict=True) if declared == -1])
    return shape[:start] + tuple(next(variable) if dim == -1 else dim for dim in target[start:])


@dataclass(frozen=True)
class DynamicBatching:
    max_queue_delay_us: int = layout.MAX_QUEUE_DELAY_US
    """How long the oldest queued request may wait for batch-mates before its batch runs anyway."""
    preferred_batch_sizes: tuple[int, ...] = layout.PREFERRED_BATCH_SIZES
    """Batch sizes (in items) at which a batch is sent at once, before max_batch_size is reached."""
    max_queue_size: int = layout.MAX_QUEUE_SIZE
    """Items waiting at most; one more gets RESOURCE_EXHAUSTED at once (0 = unbounded is refused)."""
    wait_when_idle: bool = layout.WAIT_WHEN_IDLE
    """False: when no batch is running, the queue's requests start at once, and max_queue_delay_us applies only
    while the model is busy (batches then form from what queued during the running batch). On CPU, where a
    batch costs about its size, waiting only adds latency. True: always wait up to the delay (Triton's rule),
    which pays off on GPUs where a fuller batch costs little more."""
    latency_budget_ms: int = layout.LATENCY_BUDGET_MS
    """0: off. Otherwise a request to a busy model is refused at once (RESOURCE_EXHAUSTED / 429) when its predicted
    completion (the queue ahead, its own batch and what runs now, from measured batch times) is past this many
    milliseconds, and a batch is sent early rather than let its oldest request miss it. A request's own deadline,
    when shorter, is its budget."""


@dataclass(frozen=True)
class SessionOptions:
    intra_op_threads: int = 0
    """ONNX Runtime intra-op threads per instance; 0 lets ONNX Runtime choose (one per core)."""
    inter_op_threads: int = 1
    graph_optimization_level: str = "all"  # disable | basic | extended | all
    allow_spinning: bool = False
    """ORT's intra-op threads spin-wait by default; on small machines that CPU is taken from the gRPC loop."""
    inline_run_max_us: int = layout.INLINE_RUN_MAX_US
    """A run whose measured compute at its batch size is below this many microseconds is done on the event loop,
    when the model is idle, instead of a session thread: two thread hand-offs cost more than that. 0: never."""


@dataclass(frozen=True)
class ImageInput:
    """An input that also accepts encoded PNG/JPEG files as a BYTES tensor [n] (config `preprocessing` with
    `"input_format": "image"`): the server decodes and preprocesses them into the input's own tensor."""

    name: str
    preprocessing: Preprocessing
    datatype: str = "FP32"  # the input's own float type, which decoded images take


@dataclass(frozen=True)
class ImageOutput:
    """An output of images [n, channels, height, width] (config `postprocessing.output`) that a request may ask to
    receive as PNG files (contracts/wire.py)."""

    name: str
    value_range: tuple[float, float] = (-1.0, 1.0)


@dataclass(frozen=True)
class WarmupInput:
    """One input of a `model_warmup` sample, as Triton's ModelWarmup.Input: its datatype and per-item dims (no batch
    axis, every dimension given), and where its data comes from."""

    datatype: str  # protocol name ("FP32", "BYTES"); Triton's "TYPE_FP32" / "TYPE_STRING" are read as these
    dims: tuple[int, ...]
    source: str  # "zero_data" | "random_data" | "input_data_file"
    file: str = ""  # input_data_file: a path below the model folder's warmup/, in the protocol's raw form


@dataclass(frozen=True)
class WarmupSample:
    """One request sample of config `model_warmup` (Triton's ModelWarmup): run `count` times (at least once) at
    `batch_size` items, the inputs repeated for each item, before the version may report ready."""

    name: str
    batch_size: int  # 0: skipped, as Triton skips it
    inputs: tuple[tuple[str, WarmupInput], ...]
    count: int = 1


@dataclass(frozen=True)
class ModelSpec:
    """A model's configuration: config.json merged with what the ONNX graph says."""

    name: str
    platform: str  # layout.PLATFORM
    max_batch_size: int  # 0 = the model does not batch; its shapes then carry no batch axis
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dynamic_batching: DynamicBatching | None = DynamicBatching()
    instance_count: int = 1
    labels: tuple[str, ...] = ()  # from the labels file; index -> label for the classification extension
    labels_file: str | None = None  # that file's name in the model folder, as the config gives it (ModelConfig)
    label_output: str | None = None  # the output the labels describe
    preprocessing: dict[str, Any] = field(default_factory=dict)  # hints for clients: size, channels, mean/std...
    parameters: dict[str, str] = field(default_factory=dict)  # free-form, reported in metadata and config
    session: SessionOptions = SessionOptions()
    execution_providers: tuple[str, ...] = ("cuda", "cpu")  # preference order; the first that works is used
    version_policy: dict[str, Any] = field(default_factory=lambda: layout.parse_version_policy(None))
    postprocessing: dict[str, Any] = field(default_factory=dict)  # hints for clients: which output, value range
    image_input: ImageInput | None = None  # from preprocessing, checked against the graph when the model loads
    image_output: ImageOutput | None = None  # from postprocessing, when that output holds images
    optional_outputs: frozenset[str] = frozenset()  # parameter optional_outputs: sent only when a request names them
    model_warmup: tuple[WarmupSample, ...] = ()  # the user's own warm-up samples; none: the server makes its own

    # Looked up on every request; built once per loaded spec.
    @cached_property
    def inputs_by_name(self) -> dict[str, TensorSpec]:
        return {tensor.name: tensor for tensor in self.inputs}

    @cached_property
    def outputs_by_name(self) -> dict[str, TensorSpec]:
        return {tensor.name: tensor for tensor in self.outputs}

    @cached_property
    def default_outputs(self) -> tuple[TensorSpec, ...]:
        """What a request naming no outputs gets: all but the optional ones, in graph order."""
        return tuple(tensor for tensor in self.outputs if tensor.name not in self.optional_outputs)

    @cached_property
    def default_compute(self) -> frozenset[str] | None:
        """What the model computes for such a request; None (all of them) when no output is optional."""
        return frozenset(t.name for t in self.default_outputs) if self.optional_outputs else None

    @cached_property
    def padded_input(self) -> str | None:
        """The image input whose recipe pads (resize "pad"): its tensors' height and width must be stride multiples."""
        image = self.image_input
        return image.name if image is not None and image.preprocessing.padded else None


@dataclass(frozen=True, slots=True)
class ComputeTimes:
    """One model execution's phases (Triton's compute input / infer / output), measured by the runtime and
    reported by the batcher with the batch they belong to."""

    input_s: float  # building the feed: lookups, dtype checks, contiguous copies
    infer_s: float  # session.run
    output_s: float  # assembling the output dict


class ModelState(enum.StrEnum):
    """States as RepositoryIndex reports them (Triton's words)."""

    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"
