"""The KServe v2 REST API with the Triton extensions tritonclient.http calls: each handler converts the request,
calls the data plane (dataplane.py) the gRPC servicer calls, and converts the answer back. Each route names its
operation (operations.py), which the door's auth reads.

Errors: a ServiceError is answered {"error": message} with its status's HTTP code (service/errors.py); anything
else is logged with its traceback and answered 500 with a generic message, as on gRPC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import numpy as np
import orjson
from aiohttp import web
from google.protobuf.message import Message

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.contracts.features import (
    EXPLAIN_METHODS,
    EXPLAIN_PARAMETER,
    EXPLAINED_CLASS_OUTPUT,
    EXPLANATION_OUTPUT,
    PATCH_PARAMETER,
    STRIDE_PARAMETER,
    TARGET_CLASS_PARAMETER,
)
from cnnserve.service.errors import InvalidInput, ServiceError, Status
from cnnserve.service.protocol import rest_codec
from cnnserve.service.protocol.atlas_files import AtlasFiles
from cnnserve.service.protocol.dataplane import DataPlane
from cnnserve.service.protocol.decode import LENGTH
from cnnserve.service.protocol.inference import InferencePath
from cnnserve.service.protocol.operations import Operation
from cnnserve.service.registry.registry import ModelManager
from cnnserve.service.settings import Settings
from cnnserve.service.types import ModelSpec

logger = logging.getLogger(__name__)

JSON = "application/json"
IMAGE_TYPES = ("image/png", "image/jpeg")
DEFAULT_TOP_K = 5
RETRY_AFTER_S = "1"  # a full queue drains in milliseconds to seconds; Retry-After takes whole seconds

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_reply(document: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(document), status=status, content_type=JSON)


def error_reply(status: int, message: str) -> web.Response:
    reply = web.Response(body=rest_codec.error_body(message), status=status, content_type=JSON)
    if status == Status.RESOURCE_EXHAUSTED.value:
        reply.headers["Retry-After"] = RETRY_AFTER_S
    if status == Status.UNAUTHENTICATED.value:
        reply.headers["WWW-Authenticate"] = "Bearer"
    return reply


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as {"error": ...}: ours with their status, aiohttp's own (404, 405, 413) with theirs."""
    try:
        return await handler(request)
    except ServiceError as err:
        return error_reply(err.status.value, str(err))
    except web.HTTPException as err:
        if err.status < 400:
            raise
        detail = err.text or ""  # aiohttp's own say "404: Not Found"; ours and 413's say what happened
        reply = error_reply(err.status, detail if detail and not detail.startswith(f"{err.status}:") else err.reason)
        if "Allow" in err.headers:
            reply.headers["Allow"] = err.headers["Allow"]
        if err.status in (408, 413):  # the rest of that body is not worth waiting for: hang up after the answer
            reply.force_close()
        return reply
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("event=rest_handler_failed path=%s", request.path)
        return error_reply(500, "internal error; see the server log")


def message_dict(message: Message) -> dict[str, Any]:
    """A protobuf message as Triton's REST JSON: proto field names, 64-bit integers as numbers (json_format would
    write them as strings, which tritonclient.http hands to callers unchanged), enums by name."""
    out: dict[str, Any] = {}
    for f in message.DESCRIPTOR.fields:
        value = getattr(message, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value_field = f.message_type.fields_by_name["value"]
            out[f.name] = {k: _field_value(value_field, v) for k, v in value.items()}
        elif f.is_repeated:
            out[f.name] = [_field_value(f, v) for v in value]
        elif f.containing_oneof is not None or f.message_type is not None:
            if message.HasField(f.name):
                out[f.name] = _field_value(f, value)
        else:
            out[f.name] = _field_value(f, value)
    return out


def _field_value(f: Any, value: Any) -> Any:
    if f.message_type is not None:
        return message_dict(value)
    if f.enum_type is not None:
        return f.enum_type.values_by_number[value].name
    return value


class Route(NamedTuple):
    """One REST route and the operation it performs: the door's auth asks operations.py about that operation."""

    method: str
    path: str
    handler: Handler
    operation: Operation


class RestApi:
    def __init__(self, settings: Settings, plane: DataPlane, models: ModelManager, path: InferencePath) -> None:
        self._plane = plane
        self._path = path
        self._atlas = AtlasFiles(models)
        self.max_json_bytes = settings.max_rest_json_bytes
        self._body_timeout_s = settings.rest_timeout_s

    async def _read(self, request: web.Request) -> bytes:
        """The whole body, bounded by the app's client_max_size (413) and by rest_timeout_s (408): a client that
        trickles its body cannot hold a connection and a growing buffer for ever."""
        try:
            async with asyncio.timeout(self._body_timeout_s):
                return await request.read()
        except TimeoutError:
            raise web.HTTPRequestTimeout(
                reason=f"request body not received within {self._body_timeout_s:g} s"
            ) from None

    def routes(self) -> list[Route]:
        """Fixed paths before /v2/models/{model}, so that 'stats' is not taken for a model's name."""
        op = Operation
        model, version = "/v2/models/{model}", "/v2/models/{model}/versions/{version}"
        return [
            Route("GET", "/v2/health/live", self.live, op.LIVE),
            Route("GET", "/v2/health/ready", self.ready, op.READY),
            Route("GET", "/v2", self.server_metadata, op.SERVER_METADATA),
            Route("GET", "/v2/models/stats", self.stats, op.MODEL_STATISTICS),
            Route("POST", "/v2/repository/index", self.repository_index, op.REPOSITORY_INDEX),
            Route("POST", "/v2/repository/models/{model}/load", self.load, op.LOAD),
            Route("POST", "/v2/repository/models/{model}/unload", self.unload, op.UNLOAD),
            *[route for base in (model, version) for route in (
                Route("GET", base, self.model_metadata, op.MODEL_METADATA),
                Route("GET", base + "/ready", self.model_ready, op.MODEL_READY),
                Route("GET", base + "/config", self.model_config, op.MODEL_CONFIG),
                Route("GET", base + "/stats", self.stats, op.MODEL_STATISTICS),
                Route("POST", base + "/infer", self.infer, op.INFER),
                Route("POST", base + "/explain", self.explain, op.EXPLAIN),
                Route("GET", base + "/atlas/{file}", self._atlas.get, op.ATLAS),
            )],
        ]  # fmt: skip

    # -- health and metadata -------------------------------------------------------------------------------

    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self._plane.live() else 503)

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self._plane.ready() else 503)

    async def model_ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self._plane.model_ready(*_model(request)) else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return json_reply(message_dict(self._plane.server_metadata()))

    async def model_metadata(self, request: web.Request) -> web.Response:
        return json_reply(message_dict(self._plane.model_metadata(*_model(request))))

    async def model_config(self, request: web.Request) -> web.Response:
        return json_reply(message_dict(self._plane.model_config(*_model(request)).config))

    async def stats(self, request: web.Request) -> web.Response:
        name, version = request.match_info.get("model", ""), request.match_info.get("version", "")
        return json_reply(message_dict(self._plane.model_statistics(name, version)))

    # -- repository -------------------------------------------------------------------------------------------

    async def repository_index(self, request: web.Request) -> web.Response:
        body = await self._read(request)
        options = rest_codec.loads(body, "request body") if body.strip() else {}
        ready_only = isinstance(options, dict) and options.get("ready") is True
        index = await self._plane.repository_index(ready_only=ready_only)
        return json_reply([
            {"name": e.name, **({"version": e.version} if e.version else {}), "state": e.state, "reason": e.reason}
            for e in index.models
        ])  # fmt: skip

    async def load(self, request: web.Request) -> web.Response:
        await self._plane.load(request.match_info["model"])
        return json_reply({})

    async def unload(self, request: web.Request) -> web.Response:
        await self._plane.unload(request.match_info["model"])
        return json_reply({})

    # -- inference --------------------------------------------------------------------------------------------

    async def explain(self, request: web.Request) -> web.Response:
        """An infer body answered with its occlusion explanation (docs/explain.md); its parameters may set patch,
        patch_stride and target_class. With Accept: image/png, the first item's heatmap over its image as PNG."""
        return await self.infer(request, explain=True)

    async def infer(self, request: web.Request, explain: bool = False) -> web.Response:
        name, version = _model(request)
        body = await self._read(request)
        content_type = request.content_type
        if content_type in IMAGE_TYPES and explain:
            return await self._explain_image(request, name, version, body)
        if content_type in IMAGE_TYPES:
            return await self._infer_image(request, name, version, body)
        header_length = request.headers.get(rest_codec.HEADER_LENGTH)
        json_part = len(body) if header_length is None else _int_or(header_length, len(body))
        if json_part > self.max_json_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=self.max_json_bytes, actual_size=json_part)
        parsed = rest_codec.parse_infer(body, header_length, name, version, self._path.limits)
        wants_png = "image/png" in request.headers.get("Accept", "")
        if wants_png:
            parsed.request.parameters["output_format"].string_param = "png"
        if explain and EXPLAIN_PARAMETER not in parsed.request.parameters:
            parsed.request.parameters[EXPLAIN_PARAMETER].string_param = EXPLAIN_METHODS[0]
        explaining = EXPLAIN_PARAMETER in parsed.request.parameters  # /explain, or /infer with the parameter
        result = await self._path.infer(parsed.request, _deadline(parsed.parameters), parsed.raw_inputs)
        if wants_png:
            png_name = EXPLANATION_OUTPUT if explaining else result.spec.png_output  # images, mask or heatmap
            png = next((t for t in result.tensors if t.name == png_name and t.datatype == "BYTES"), None)
            if png is not None and png.array.size:
                return web.Response(body=bytes(png.array.reshape(-1)[0]), content_type="image/png")
        body_out, header_size = rest_codec.encode_infer(parsed, result.model_name, result.model_version, result.tensors)
        if header_size is None:
            return web.Response(body=body_out, content_type=JSON)
        reply = web.Response(body=body_out, content_type="application/octet-stream")
        reply.headers[rest_codec.HEADER_LENGTH] = str(header_size)
        return reply

    async def _infer_image(self, request: web.Request, name: str, version: str, body: bytes) -> web.Response:
        """A PNG/JPEG body is one request of one image; the answer is its top-k predictions, best first (a
        segmenter's: its detections, or with Accept: image/png its mask, blended over the image with ?overlay=; an
        image-to-image model's: its output image)."""
        spec = self._path.spec(name, version)
        target = spec.image_input
        if target is None:
            raise InvalidInput(f"model {spec.name!r} takes no image input; send a JSON or binary tensor request")
        if spec.image_output is not None:
            return await self._image_to_image(request, spec, version, body)
        if spec.spatial is not None:
            return await self._segment_image(request, spec, version, body)
        scores_name = spec.label_output or spec.outputs[0].name
        top_k = _int_or(request.query.get("top_k", str(DEFAULT_TOP_K)), -1)
        if top_k <= 0:
            raise InvalidInput(f"query parameter top_k must be a positive integer, got {request.query['top_k']!r}")
        message = pb.ModelInferRequest(model_name=name, model_version=version)
        message.inputs.add(name=target.name, datatype="BYTES", shape=[1])  # one file
        message.outputs.add(name=scores_name)
        result = await self._path.infer(message, None, [LENGTH.pack(len(body)) + body])
        scores = np.asarray(result.tensors[0].array)
        item = scores[0] if spec.max_batch_size > 0 else scores
        return json_reply({
            "model_name": result.model_name, "model_version": result.model_version,
            "predictions": rest_codec.predictions(item, spec.labels, top_k),
        })  # fmt: skip

    async def _explain_image(self, request: web.Request, name: str, version: str, body: bytes) -> web.Response:
        """A PNG/JPEG body explained: JSON {explained_class, label, explanation [H][W]}, or with Accept: image/png
        the heatmap over the image; query parameters patch, patch_stride and target_class as in the infer body."""
        spec = self._path.spec(name, version)
        if spec.image_input is None:
            raise InvalidInput(f"model {spec.name!r} takes no image input; send a JSON or binary tensor request")
        message = pb.ModelInferRequest(model_name=name, model_version=version)
        message.inputs.add(name=spec.image_input.name, datatype="BYTES", shape=[1])  # one file
        message.outputs.add(name=EXPLANATION_OUTPUT)
        message.outputs.add(name=EXPLAINED_CLASS_OUTPUT)
        message.parameters[EXPLAIN_PARAMETER].string_param = EXPLAIN_METHODS[0]
        for key in (PATCH_PARAMETER, STRIDE_PARAMETER, TARGET_CLASS_PARAMETER):
            if key in request.query:
                value = _int_or(request.query[key], -1)
                if value < 0:
                    raise InvalidInput(f"query parameter {key} must be a non-negative integer, got "
                                       f"{request.query[key]!r}")  # fmt: skip
                message.parameters[key].int64_param = value
        wants_png = "image/png" in request.headers.get("Accept", "")
        if wants_png:
            message.parameters["output_format"].string_param = "png"
        result = await self._path.infer(message, None, [LENGTH.pack(len(body)) + body])
        explanation, explained = (np.asarray(t.array) for t in result.tensors)
        if wants_png:
            return web.Response(body=bytes(explanation.reshape(-1)[0]), content_type="image/png")
        index = int(explained[0])
        return json_reply({
            "model_name": result.model_name, "model_version": result.model_version, "explained_class": index,
            "label": spec.labels[index] if index < len(spec.labels) else str(index),
            "explanation": np.round(explanation[0].astype(np.float64), 6).tolist(),
        })  # fmt: skip

    async def _image_to_image(self, request: web.Request, spec: ModelSpec, version: str, body: bytes
                              ) -> web.Response:  # fmt: skip
        """An image model's answer to a file (a style model's, contracts/style.py): with Accept: image/png its output
        image as a PNG at the file's size; otherwise the output tensor, as a KServe v2 JSON reply."""
        assert spec.image_output is not None and spec.image_input is not None
        message = pb.ModelInferRequest(model_name=spec.name, model_version=version)
        message.inputs.add(name=spec.image_input.name, datatype="BYTES", shape=[1])  # one file
        message.outputs.add(name=spec.image_output.name)
        wants_png = "image/png" in request.headers.get("Accept", "")
        if wants_png:
            message.parameters["output_format"].string_param = "png"
        result = await self._path.infer(message, None, [LENGTH.pack(len(body)) + body])
        if wants_png:
            return web.Response(body=bytes(result.tensors[0].array.reshape(-1)[0]), content_type="image/png")
        reply, _ = rest_codec.encode_infer(rest_codec.RestRequest(message, []), result.model_name,
                                           result.model_version, result.tensors)  # fmt: skip
        return web.Response(body=reply, content_type=JSON)

    async def _segment_image(self, request: web.Request, spec: ModelSpec, version: str, body: bytes
                             ) -> web.Response:  # fmt: skip
        assert spec.spatial is not None and spec.image_input is not None
        message = pb.ModelInferRequest(model_name=spec.name, model_version=version)
        message.inputs.add(name=spec.image_input.name, datatype="BYTES", shape=[1])  # one file
        if "image/png" in request.headers.get("Accept", ""):
            if spec.spatial.mask is None:
                raise InvalidInput(f"model {spec.name!r} has no mask output (postprocessing.mask) to send as PNG")
            message.outputs.add(name=spec.spatial.mask)
            message.parameters["output_format"].string_param = "png"
            if "overlay" in request.query:
                message.parameters["overlay"].double_param = _overlay_query(request.query["overlay"])
            result = await self._path.infer(message, None, [LENGTH.pack(len(body)) + body])
            return web.Response(body=bytes(result.tensors[0].array.reshape(-1)[0]), content_type="image/png")
        names = rest_codec.detection_outputs(spec)
        if names is None:
            raise InvalidInput(
                f"model {spec.name!r} has no boxes, scores and classes outputs to answer detections; "
                "ask for its mask with Accept: image/png, or send a JSON tensor request"
            )
        for output in names:
            message.outputs.add(name=output)
        result = await self._path.infer(message, None, [LENGTH.pack(len(body)) + body])
        boxes, scores, classes = (np.asarray(t.array)[0] for t in result.tensors)
        return json_reply({
            "model_name": result.model_name, "model_version": result.model_version,
            "detections": rest_codec.detections(boxes, scores, classes, spec.labels),
        })  # fmt: skip


def _overlay_query(text: str) -> float:
    try:
        alpha = float(text)
    except ValueError:
        alpha = -1.0
    if not 0 < alpha <= 1:
        raise InvalidInput(f"query parameter overlay must be the palette's weight, a number in (0, 1]; got {text!r}")
    return alpha


def _model(request: web.Request) -> tuple[str, str]:
    return request.match_info["model"], request.match_info.get("version", "")


def _int_or(text: str, fallback: int) -> int:
    try:
        return int(text)
    except ValueError:
        return fallback


def _deadline(parameters: dict[str, Any]) -> float | None:
    """Triton's `timeout` request parameter, in microseconds (tritonclient.http's infer(timeout=...))."""
    timeout_us = parameters.get("timeout")
    if isinstance(timeout_us, int) and not isinstance(timeout_us, bool) and timeout_us > 0:
        return time.monotonic() + timeout_us / 1e6
    return None
