"""Standard grpc.health.v1 statuses, kept in step with the server's state.

Service names: "" answers liveness (SERVING while the process serves RPCs), "ready" and
"inference.GRPCInferenceService" answer readiness (every model meant to be loaded is loaded and warm, and the
server is not draining), and each model's name answers that model's readiness. Kubernetes can therefore probe
liveness and readiness separately (Triton maps both to readiness).
"""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2

READY_SERVICE = "ready"
INFERENCE_SERVICE = "inference.GRPCInferenceService"

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthReporter:
    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()

    async def set_live(self) -> None:
        await self.servicer.set("", _SERVING)

    async def set_ready(self, ready: bool) -> None:
        status = _SERVING if ready else _NOT_SERVING
        await self.servicer.set(READY_SERVICE, status)
        await self.servicer.set(INFERENCE_SERVICE, status)

    async def set_model(self, name: str, ready: bool) -> None:
        await self.servicer.set(name, _SERVING if ready else _NOT_SERVING)

    async def shutting_down(self) -> None:
        """Every status turns NOT_SERVING and stays so (the library ignores later updates)."""
        await self.servicer.enter_graceful_shutdown()
