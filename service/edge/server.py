"""Assembles and runs the server: gRPC (inference, health, reflection), the HTTP listener, the model registry.

Start-up order lets probes tell "alive but loading" from "ready": listeners first (live), then models load and
warm up, then readiness turns on. Shutdown runs the other way: not ready at once, refuse new requests, finish every
accepted one within the grace period, then stop the listeners.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import _async as reflection_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2
from opentelemetry.sdk.trace import TracerProvider

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.service.edge import heap, tls, tracing
from cnnserve.service.edge.auth import AuthInterceptor, TokenStore
from cnnserve.service.edge.browsers import allowed_hosts
from cnnserve.service.edge.health import HealthReporter
from cnnserve.service.edge.http import HttpServer, start_http_server
from cnnserve.service.edge.metrics import Metrics, ModelMetrics
from cnnserve.service.edge.rest import build_app, start_rest_server
from cnnserve.service.edge.web import WebListener
from cnnserve.service.execution.images import ImageWorkers
from cnnserve.service.protocol.dataplane import DataPlane
from cnnserve.service.protocol.guard import StreamsPerConnection, guarded_service
from cnnserve.service.protocol.inference import InferencePath, kind_factory
from cnnserve.service.protocol.log_settings import LogSettings
from cnnserve.service.protocol.operations import AccessPolicy
from cnnserve.service.protocol.rest import RestApi
from cnnserve.service.protocol.servicer import InferenceServicer
from cnnserve.service.registry.registry import ModelManager
from cnnserve.service.registry.served import ServedModel
from cnnserve.service.scheduling.gate import RequestGate
from cnnserve.service.scheduling.memory import MemoryBudget
from cnnserve.service.settings import Settings
from cnnserve.service.wire.shared_memory import SharedMemoryRegions

logger = logging.getLogger(__name__)

REPLY_FLUSH_S = 1.0  # after the drain: time for replies already written to reach their clients


class InferenceServer:
    """One server instance; tests start several in one process on ephemeral ports."""

    def __init__(self, settings: Settings) -> None:
        """Reads the TLS and token files at once: ConfigError when one cannot be used, before anything starts."""
        self.settings = settings
        self.tokens = TokenStore(settings.auth_tokens, settings.auth_token_file) if settings.auth else None
        self._grpc_credentials = tls.grpc_credentials(settings) if settings.tls else None
        self._http_tls = tls.http_context(settings) if settings.tls else None
        self.metrics = Metrics()
        self._heap_frozen = False  # heap.freeze_long_lived() ran once the startup models were loaded
        self.gate = RequestGate()
        self.health = HealthReporter()
        self.images = ImageWorkers(settings.max_image_pixels, settings.max_jpeg_scans)
        self.models = ModelManager(settings, on_model_event=self._on_model_event, observer_factory=self._observer_for,
                                   kind_factory=kind_factory(settings))  # fmt: skip
        self.metrics.attach_models(self.models)
        # One request path for both doors: a REST and a gRPC request reach the same batcher and may share a batch.
        self.memory = MemoryBudget(settings.max_inflight_bytes)
        self.metrics.attach_memory(lambda: self.memory.held, lambda: self.memory.refused)
        self.shared_memory = SharedMemoryRegions(settings.allow_client_shm)
        self.path = InferencePath(settings, self.models, self.gate, self.images, self.memory, self.shared_memory)
        # Every operation of both doors, readiness included, answered once; the listeners are its only input here.
        self.logs = LogSettings()  # the logging extension's; what clients set is undone at stop
        self.plane = DataPlane(settings, self.models, self.gate, self.path, listening=self.is_live, logs=self.logs)
        self._grpc: grpc.aio.Server | None = None
        self._http: HttpServer | None = None
        self._rest: WebListener | None = None
        self._health_tasks: set[asyncio.Task[None]] = set()
        self._traces: TracerProvider | None = None
        self.grpc_port = 0
        self.http_port = 0
        self.rest_port = 0

    def is_live(self) -> bool:
        """The gRPC listener is up (the others start after it)."""
        return self._grpc is not None

    async def start(self) -> None:
        self._log_security()
        self._traces = tracing.start(self.settings)
        await self._start_grpc()
        if self.settings.http_port >= 0:
            self._http = await start_http_server(
                self.settings.host,
                self.settings.http_port,
                metrics=self.metrics,
                live=self.plane.live,
                ready=self.plane.ready,
                ssl_context=self._http_tls,
                authorize=self.tokens.check_header if self.tokens else None,
                policy=AccessPolicy.of(self.settings),
                hosts=allowed_hosts(self.settings),
                head_timeout_s=self.settings.rest_head_timeout_s,
            )
            self.http_port = self._http.port
        if self.settings.rest_port >= 0:
            api = RestApi(self.settings, self.plane)
            app = build_app(self.settings, api, self.tokens, self._refused)
            self._rest = await start_rest_server(self.settings, app, self.settings.rest_port, self._http_tls)
            self.rest_port = self._rest.port
        await self.health.set_live()
        await self.health.set_ready(False)
        logger.info(
            "event=listening grpc=%s:%d http=%s:%d rest=%s:%d",
            self.settings.host,
            self.grpc_port,
            self.settings.host,
            self.http_port,
            self.settings.host,
            self.rest_port,
        )
        await self.models.start()
        heap.freeze_long_lived()  # the models' objects, loaded for good: out of every later full collection
        self._heap_frozen = True
        await self._refresh_readiness()
        logger.info("event=ready ready=%s models=%d", self.plane.ready(), len(self.models.served_models()))

    def _log_security(self) -> None:
        s = self.settings
        if not s.tls:
            logger.warning("event=insecure grpc and http are plaintext: anyone on the path can read and alter "
                           "tensors%s; give --tls-cert-file/--tls-key-file (--no-allow-insecure makes this an error)",
                           " and bearer tokens" if s.auth else "")  # fmt: skip
        if not s.auth and not _loopback(s.host):
            logger.warning("event=auth_off host=%s anyone who reaches the port may run inference; "
                           "set --auth-token-file or CNNSERVE_AUTH_TOKENS", s.host)  # fmt: skip
        logger.info("event=security tls=%s mutual_tls=%s auth=%s open_health=%s max_concurrent_streams=%d "
                    "max_streams_per_connection=%d max_elements_per_request=%d max_request_tensor_bytes=%d", s.tls,
                    s.tls_client_ca_file is not None, s.auth, s.auth_open_health, s.max_concurrent_streams,
                    s.max_streams_per_connection, s.max_elements_per_request, s.max_request_tensor_bytes)  # fmt: skip
        if s.allow_client_shm:
            logger.warning("event=client_shm_allowed clients may register this user's shared memory objects "
                           "(/dev/shm) for inputs and outputs%s", "" if s.auth else "; no token is needed")  # fmt: skip

    def _refused(self) -> None:
        self.metrics.unauthenticated.inc()

    async def _start_grpc(self) -> None:
        limit = self.settings.max_message_bytes
        interceptors: list[grpc.aio.ServerInterceptor] = []
        if self.tokens is not None:  # first: a caller without a token gets nothing else, not even a parse
            interceptors.append(
                AuthInterceptor(self.tokens, policy=AccessPolicy.of(self.settings), on_refused=self._refused)
            )
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
                ("grpc.max_connection_idle_ms", _ms(self.settings.grpc_connection_idle_s)),
                ("grpc.max_connection_age_ms", _ms(self.settings.grpc_connection_age_s)),
                ("grpc.max_connection_age_grace_ms", _ms(self.settings.grpc_connection_age_grace_s)),
            ],
            maximum_concurrent_rpcs=self.settings.max_concurrent_streams,
        )
        servicer = InferenceServicer(self.plane)
        streams = StreamsPerConnection(self.settings.max_streams_per_connection)
        server.add_generic_rpc_handlers(
            (guarded_service(pb.DESCRIPTOR.services_by_name["GRPCInferenceService"], servicer, pb, streams),)
        )
        health = health_pb2.DESCRIPTOR.services_by_name["Health"]
        server.add_generic_rpc_handlers((guarded_service(health, self.health.servicer, health_pb2, streams),))
        names = (
            pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        # The aio servicer is what enable_server_reflection() uses; registered by hand so that it gets the guard.
        reflector = reflection_aio.ReflectionServicer(names, pool=_reflection_pool())
        service = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
        server.add_generic_rpc_handlers((guarded_service(service, reflector, reflection_pb2, streams),))
        address = f"{self.settings.host}:{self.settings.grpc_port}"
        if self._grpc_credentials is not None:
            self.grpc_port = server.add_secure_port(address, self._grpc_credentials)
        else:
            self.grpc_port = server.add_insecure_port(address)
        if self.grpc_port == 0:
            raise OSError(f"cannot bind gRPC to {self.settings.host}:{self.settings.grpc_port}")
        await server.start()
        self._grpc = server

    def _observer_for(self, name: str, version: int) -> ModelMetrics:
        return self.metrics.for_model(name, str(version))

    def _on_model_event(self, model: ServedModel, loaded: bool) -> None:
        if loaded and self._heap_frozen:  # a model loaded later (explicit mode, a new version): its objects too
            heap.freeze_long_lived()
        task = asyncio.get_running_loop().create_task(self._refresh_readiness())
        self._health_tasks.add(task)
        task.add_done_callback(self._health_tasks.discard)

    async def _refresh_readiness(self) -> None:
        for name in self.models.tracked_names():
            await self.health.set_model(name, self.plane.model_ready(name))
        await self.health.set_ready(self.plane.ready())

    async def stop(self, grace_s: float | None = None) -> None:
        """Drains: not ready at once, new requests refused, accepted ones finished (up to the grace period)."""
        grace = self.settings.grace_period_s if grace_s is None else grace_s
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.gate.close()
        await self.health.set_ready(False)
        logger.info("event=draining in_progress=%d grace_s=%.1f", self.gate.in_progress, grace)
        drained = await self.gate.wait_idle(grace)
        await self.models.stop(drain=drained)
        self.images.close()
        self.shared_memory.close()  # a region a request still uses is unmapped once that request is answered
        await self.health.shutting_down()
        if self._http is not None:
            await self._http.close()
        if self._rest is not None:  # after the drain: every admitted REST request has been answered
            await self._rest.close()
        if self._grpc is not None:
            # Every accepted request is answered by now; what still runs (an idle ModelStreamInfer, a health Watch)
            # would otherwise hold the exit for the whole grace period. A short window lets written replies go out.
            await self._grpc.stop(min(REPLY_FLUSH_S, max(0.0, grace - (loop.time() - started))))
        if self._heap_frozen:
            heap.unfreeze()
            self._heap_frozen = False
        self.logs.close()
        await tracing.stop(self._traces)  # after the drain: the last requests' spans are exported too
        self._traces = None
        logger.info("event=stopped drained=%s admitted=%d unfinished=%d", drained, self.gate.admitted,
                    self.gate.in_progress)  # fmt: skip


def _ms(seconds: float) -> int:
    return min(int(seconds * 1000), 2**31 - 1)  # gRPC's channel arguments are C ints


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _reflection_pool() -> descriptor_pool.DescriptorPool:
    """Our stubs live in a private descriptor pool (so tritonclient's identical names can share a process);
    reflection must be shown a pool that holds them and the other services' files."""
    pool = descriptor_pool.DescriptorPool()
    for module in (pb, health_pb2, reflection_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    return pool


async def serve(settings: Settings) -> None:
    """Runs until SIGTERM or SIGINT, then drains and returns."""
    server = InferenceServer(settings)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    startup = asyncio.create_task(server.start())
    waiter = asyncio.create_task(stop_requested.wait())
    await asyncio.wait({startup, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if startup.done():
        startup.result()
        await waiter
    else:
        startup.cancel()
    logger.info("event=signal action=drain")
    await server.stop()
