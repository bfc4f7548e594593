"""Request traces' plumbing: the OpenTelemetry SDK's provider and exporters, built at start from OTEL_* variables,
flushed and shut down at stop. The spans themselves are service/tracing.py's.

The SDK reads most of its variables itself, from os.environ (endpoints, headers, timeouts, OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER[_ARG], OTEL_BSP_*); only the choice of exporter and OTLP protocol is
made here, which the SDK leaves to its auto-configuration. They are read from the same os.environ, not from Settings,
so that the two can never disagree.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from cnnserve.service import tracing
from cnnserve.service.settings import ConfigError, Settings

logger = logging.getLogger(__name__)

EXPORTERS = ("otlp", "console", "none")
PROTOCOLS = ("http/protobuf", "grpc")
DEFAULT_SERVICE_NAME = "cnnserve"


def start(settings: Settings, env: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """Turns tracing on when settings.trace says so and OTEL_TRACES_EXPORTER names an exporter; the provider to
    hand to `stop`, or None when tracing stays off. ConfigError for an exporter or protocol it does not know."""
    if not settings.trace or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise ConfigError(f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} unknown; use {', '.join(EXPORTERS)}")
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip().lower()  # fmt: skip
    if "otlp" in names and protocol not in PROTOCOLS:
        raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} unknown; use {' or '.join(PROTOCOLS)}")
    exporters = [_exporter(name, protocol) for name in names if name != "none"]
    if not exporters:
        return None
    # The service name given here outranks OTEL_SERVICE_NAME in Resource.create, so that one is passed on explicitly.
    service = env.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}), shutdown_on_exit=False)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))  # a thread of its own: export is off the loop
    tracing.tracer = provider.get_tracer("cnnserve")
    logger.info("event=tracing_on exporters=%s protocol=%s service=%s", ",".join(names), protocol, service)
    return provider


async def stop(provider: TracerProvider | None) -> None:
    """Tracing off; the spans still buffered exported (a blocking flush, so in a thread)."""
    if provider is None:
        return
    tracing.tracer = None
    await asyncio.to_thread(provider.shutdown)


def _exporter(name: str, protocol: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()
