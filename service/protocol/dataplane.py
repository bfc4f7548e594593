"""The data plane: every Open Inference Protocol operation answered once, for both doors.

The gRPC servicer and the REST endpoints only convert: a request into these arguments, the answer into their wire
form. Answers are the generated protobuf messages (describe.py and statistics.py build them already): gRPC sends
them as they are, REST renders them as Triton's JSON (rest_replies.message_dict), so there is no third shape to keep in
step. Readiness is defined here and nowhere else; the health service and the metrics port ask it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence

from opentelemetry.trace import Span

from cnnserve import __version__
from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.service.errors import FailedPrecondition, InvalidInput, NotSupported
from cnnserve.service.kinds.base import Kind
from cnnserve.service.protocol import describe, statistics
from cnnserve.service.protocol.inference import InferencePath, InferResult, kind_of
from cnnserve.service.protocol.log_settings import LogSettings
from cnnserve.service.protocol.trace_settings import TraceSettings
from cnnserve.service.registry.registry import ModelManager
from cnnserve.service.scheduling.gate import RequestGate
from cnnserve.service.scheduling.memory import Reservation
from cnnserve.service.settings import Settings
from cnnserve.service.types import ModelSpec
from cnnserve.service.wire.decode import Buffer, RequestLimits
from cnnserve.service.wire.shared_memory import SharedMemoryRegions

# Only what really works, each on both doors unless it says otherwise: perf_analyzer asks ModelStatistics only when
# "statistics" is listed, and clients choose binary tensors by "binary_tensor_data".
EXTENSIONS = (
    "binary_tensor_data",  # REST only, as in Triton: tensors after the JSON header (rest_codec.py)
    "classification",
    "logging",
    "model_configuration",
    "model_repository",
    "statistics",
)
SYSTEM_SHARED_MEMORY = "system_shared_memory"  # listed only while settings.allow_client_shm is on
NO_CUDA_SHARED_MEMORY = (
    "CUDA shared memory is not supported: this server runs models on the CPU and maps no GPU memory; use system "
    "shared memory (SystemSharedMemoryRegister, with --allow-client-shm)"
)


def extensions(settings: Settings) -> list[str]:
    """The protocol extensions this server offers, as ServerMetadata lists them."""
    return [*EXTENSIONS, *((SYSTEM_SHARED_MEMORY,) if settings.allow_client_shm else ())]


LOAD_CONFIG = "config"
"""Load parameter: a config.json document (JSON text) to load the model with instead of its folder's (Triton's)."""
LOAD_FILE_PREFIX = "file:"
"""Triton's load parameters that carry model files (file:<version>/<name>); refused here."""


class DataPlane:
    def __init__(
        self,
        settings: Settings,
        models: ModelManager,
        gate: RequestGate,
        path: InferencePath,
        *,
        listening: Callable[[], bool],
        logs: LogSettings | None = None,
    ) -> None:
        """`listening` says whether the server's listeners are up: the one part of liveness the plane cannot see.
        `logs`: the server's log settings (the logging extension)."""
        self._settings = settings
        self._logs = logs or LogSettings()
        self._models = models
        self._gate = gate
        self._path = path
        self._listening = listening
        self._extensions = extensions(settings)
        self._regions: SharedMemoryRegions = path.shared_memory

    # -- health ------------------------------------------------------------------------------------------------

    def live(self) -> bool:
        return self._listening()

    def ready(self) -> bool:
        """Live, not draining, and every model meant to be loaded serves a warm version."""
        return self._listening() and not self._gate.closed and self._models.all_ready()

    def model_ready(self, name: str, version: str = "") -> bool:
        return not self._gate.closed and self._models.is_ready(name, version)

    # -- metadata ----------------------------------------------------------------------------------------------

    def server_metadata(self) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=self._settings.server_name, version=__version__, extensions=self._extensions
        )

    def model_metadata(self, name: str, version: str = "") -> pb.ModelMetadataResponse:
        model = self._models.get(name, version)
        versions = [m.version for m in self._models.served_models() if m.name == model.name]
        return describe.model_metadata(model.spec, versions)

    def model_config(self, name: str, version: str = "") -> pb.ModelConfigResponse:
        model = self._models.get(name, version)
        labels_file = model.spec.labels_file if model.spec.labels else None
        return pb.ModelConfigResponse(config=describe.model_config(model.spec, model.provider, labels_file))

    def model_statistics(self, name: str = "", version: str = "") -> pb.ModelStatisticsResponse:
        """Every loaded version's statistics, or those of `name` (and `version`); ModelNotFound for unknown ones."""
        if name:
            self._models.get(name, version)
        selected = [
            m
            for m in self._models.served_models()
            if (not name or m.name == name) and (not version or str(m.version) == version)
        ]
        return pb.ModelStatisticsResponse(model_stats=[statistics.model_statistics(m) for m in selected])

    # -- repository ------------------------------------------------------------------------------------------------

    async def repository_index(self, *, ready_only: bool = False) -> pb.RepositoryIndexResponse:
        entries = await self._models.index(ready_only=ready_only)
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=e.name, version=e.version, state=str(e.state), reason=e.reason
                )
                for e in entries
            ]
        )

    async def load(self, name: str, parameters: Mapping[str, object] | None = None) -> None:
        """`parameters`: the request's, as plain values; `config` overrides the folder's config.json for this load."""
        self._require_explicit_mode("load")
        await self._models.load(name, config=_load_config(parameters or {}))

    async def unload(self, name: str) -> None:
        self._require_explicit_mode("unload")
        await self._models.unload(name)

    def _require_explicit_mode(self, action: str) -> None:
        mode = self._settings.model_control_mode
        if mode != "explicit":
            raise FailedPrecondition(
                f"model {action} is only allowed in 'explicit' model control mode; this server runs in '{mode}'"
            )

    # -- logging ------------------------------------------------------------------------------------------------

    def log_settings(self, changes: Mapping[str, object] | None = None) -> pb.LogSettingsResponse:
        """The log settings after `changes` (None values leave a setting as it is); log_settings.py maps them."""
        values = self._logs.update(changes) if changes else self._logs.current()
        response = pb.LogSettingsResponse()
        for name, value in values.items():
            entry = response.settings[name]
            if isinstance(value, bool):
                entry.bool_param = value
            elif isinstance(value, int):
                entry.uint32_param = value
            else:
                entry.string_param = value
        return response

    # -- shared memory (Triton's extension) ---------------------------------------------------------------------

    def system_shared_memory_status(self, name: str = "") -> pb.SystemSharedMemoryStatusResponse:
        """The region `name`, or every region; RegionNotFound for a name that is not registered."""
        Status = pb.SystemSharedMemoryStatusResponse.RegionStatus  # noqa: N806  # a message class
        return pb.SystemSharedMemoryStatusResponse(
            regions={
                r.name: Status(name=r.name, key=r.key, offset=r.offset, byte_size=r.byte_size)
                for r in self._regions.status(name)
            }
        )

    def require_client_shm(self) -> None:
        """NotSupported, saying how to turn it on, unless settings.allow_client_shm: for a door to ask first."""
        self._regions.require_enabled()

    def register_system_shared_memory(self, name: str, key: str, offset: int, byte_size: int) -> None:
        self._regions.register(name, key, offset, byte_size)

    def unregister_system_shared_memory(self, name: str = "") -> None:
        """The region `name`, or every region for ""; requests using it keep its mapping until they are answered."""
        self._regions.unregister(name)

    def cuda_shared_memory_status(self, name: str = "") -> pb.CudaSharedMemoryStatusResponse:
        raise NotSupported(NO_CUDA_SHARED_MEMORY)

    def register_cuda_shared_memory(self, name: str) -> None:
        raise NotSupported(NO_CUDA_SHARED_MEMORY)

    def unregister_cuda_shared_memory(self, name: str = "") -> None:
        """Nothing to do: no CUDA region can be registered here. Answered OK (with client shared memory on), as
        Triton built without GPUs answers it, because perf_analyzer's clean-up unregisters CUDA regions and system
        regions alike, and would fail on an error."""
        self._regions.require_enabled()

    # -- inference ---------------------------------------------------------------------------------------------

    def infer(
        self,
        request: pb.ModelInferRequest,
        deadline: float | None,
        raw_inputs: Sequence[Buffer] | None = None,
        held: Reservation | None = None,
        span: Span | None = None,
    ) -> Awaitable[InferResult]:
        """The inference path's own coroutine, handed back unawaited: no extra frame on the hot path.
        `deadline` is a time.monotonic() instant; `raw_inputs` replaces request.raw_input_contents; `held` is the
        byte budget a door reserved for the request already; `span` its trace span, when tracing is on."""
        return self._path.infer(request, deadline, raw_inputs, held, span)

    # -- traces ---------------------------------------------------------------------------------------------------

    @property
    def traces(self) -> TraceSettings:
        """Which requests make a trace; the doors ask it per request while tracing is on."""
        return self._path.traces

    def trace_setting(self, model: str | None, changes: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        """The trace settings (a model's, or the global ones) after `changes` (trace_settings.py); none: read."""
        if model:
            self._models.get(model, "")  # NOT_FOUND for a model the server does not know
        return self._path.traces.update(changes, model) if changes else self._path.traces.current(model)

    def reservation(self) -> Reservation:
        """A share of the byte budget, for a door to hold what it reads before the path costs it."""
        return self._path.memory.reservation()

    @property
    def limits(self) -> RequestLimits:
        return self._path.limits

    def model_kind(self, name: str, version: str = "") -> tuple[ModelSpec, Kind]:
        """The spec and kind of the version a request would reach: what a door reads before it parses a body."""
        model = self._models.get(name, version)
        return model.spec, kind_of(model)

    async def model_file(self, name: str, version: str, operation: str, file: str) -> tuple[bytes, str]:
        """(bytes, content type) of a file the model's kind serves beside the version."""
        model = self._models.get(name, version)  # ModelNotFound or ModelNotReady before the disk is touched
        folder = self._models.repository.model_dir(name) / str(model.version)
        return await asyncio.to_thread(kind_of(model).read_file, operation, folder, file)


def _load_config(parameters: Mapping[str, object]) -> str | None:
    """The `config` load parameter, or None. Triton's `file:` parameters are refused, not ignored: taking them would
    mean writing a client's bytes into the model repository (and loading them as a model, in this process)."""
    for key in parameters:
        if key.startswith(LOAD_FILE_PREFIX):
            raise NotSupported(
                f"load parameter {key!r}: model files sent with a load request are not taken, since the server would "
                "write a client's bytes into its model repository; put the files in the repository and load by name"
            )
        if key != LOAD_CONFIG:
            raise InvalidInput(f"load parameter {key!r}: unknown; a load takes {LOAD_CONFIG!r} alone")
    config = parameters.get(LOAD_CONFIG)
    if config is not None and not isinstance(config, str):
        raise InvalidInput(f"load parameter {LOAD_CONFIG!r} must be a string: a config.json document, as JSON text")
    return config
