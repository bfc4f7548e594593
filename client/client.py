"""A small synchronous client for cnnserve (or any Open Inference Protocol gRPC server).

    with Client("127.0.0.1:8001") as client:
        client.classify("digits_cnn", ["seven.png"])   # [[("7", 0.998), ...]]
        client.generate("cdcgan_digits", 16, label=7)  # uint8 [16, 16, 16, 1]

    Client("models.example:8001", root_certificates="ca.pem", token=token)   # TLS, bearer token

Preprocessing (size, channels, mean/std) comes from the model's configuration, so callers never repeat it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import images
from client.errors import ClientError
from cnnserve_api import grpc_service_pb2 as pb
from cnnserve_api import grpc_service_pb2_grpc as pb_grpc

NUMPY_TYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
    "FP32": np.float32, "FP64": np.float64,
}
DATATYPES = {np.dtype(t): name for name, t in NUMPY_TYPES.items()}


@dataclass(frozen=True)
class Health:
    live: bool
    ready: bool


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str
    state: str
    reason: str


class Client:
    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        max_message_bytes: int = 256 * 1024 * 1024,
        tls: bool = False,
        root_certificates: Path | str | None = None,
        certificate_chain: Path | str | None = None,
        private_key: Path | str | None = None,
        token: str | None = None,
    ) -> None:
        """`tls` (implied by any certificate file): verify the server against `root_certificates` (PEM file; the
        system's roots when None); `certificate_chain` + `private_key` (PEM files): present a client certificate
        (mutual TLS); `token`: sent as "authorization: Bearer <token>" on every call."""
        self.url = url
        self.timeout = timeout
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)]
        credentials = channel_credentials(tls, root_certificates, certificate_chain, private_key)
        if credentials is not None:
            self._channel = grpc.secure_channel(url, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(url, options=options)
        self._metadata = token_metadata(token)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._configs: dict[str, pb.ModelConfig] = {}
        self._label_cache: dict[str, list[str]] = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise ClientError.from_rpc(err) from None

    # -- server ----------------------------------------------------------------------------------------------

    def health(self) -> Health:
        live = self._call("ServerLive", pb.ServerLiveRequest()).live
        ready = self._call("ServerReady", pb.ServerReadyRequest()).ready
        return Health(live=live, ready=ready)

    def health_check(self, service: str = "ready") -> bool:
        """grpc.health.v1 Check; "" is liveness, "ready" readiness, a model name that model's readiness."""
        try:
            reply = health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise ClientError.from_rpc(err) from None
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def models(self) -> list[ModelEntry]:
        index = self._call("RepositoryIndex", pb.RepositoryIndexRequest())
        return [ModelEntry(m.name, m.version, m.state, m.reason) for m in index.models]

    def metadata(self, model: str, version: str = "") -> pb.ModelMetadataResponse:
        return self._call("ModelMetadata", pb.ModelMetadataRequest(name=model, version=version))  # type: ignore[no-any-return]

    def config(self, model: str) -> pb.ModelConfig:
        if model not in self._configs:
            self._configs[model] = self._call("ModelConfig", pb.ModelConfigRequest(name=model)).config
        return self._configs[model]

    def _json_parameter(self, model: str, key: str) -> dict[str, Any]:
        parameters = self.config(model).parameters
        if key not in parameters:
            return {}
        value: dict[str, Any] = json.loads(parameters[key].string_value)
        return value

    # -- inference ---------------------------------------------------------------------------------------------

    def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] = (),
              version: str = "") -> dict[str, np.ndarray]:
        request = pb.ModelInferRequest(model_name=model, model_version=version)
        for name, values in inputs.items():
            array = np.ascontiguousarray(values)
            datatype = DATATYPES.get(array.dtype)
            if datatype is None:
                raise ValueError(f"input '{name}': numpy dtype {array.dtype} has no protocol datatype")
            request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
            request.raw_input_contents.append(array.tobytes())
        for name in outputs:
            request.outputs.add(name=name)
        reply = self._call("ModelInfer", request)
        return {
            out.name: np.frombuffer(raw, dtype=NUMPY_TYPES[out.datatype]).reshape(tuple(out.shape))
            for out, raw in zip(reply.outputs, reply.raw_output_contents, strict=True)
            if out.datatype in NUMPY_TYPES
        }

    def classify(self, model: str, files: Sequence[Path | str], top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k (label, probability) per image file, best first."""
        hints = self._json_parameter(model, "preprocessing")
        if not hints:
            raise ValueError(f"model '{model}' publishes no preprocessing hints; use infer() with tensors")
        metadata = self.metadata(model)
        input_name = hints.get("input", metadata.inputs[0].name)
        logits = next(iter(self.infer(model, {input_name: images.load(files, hints)}).values()))
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        labels = self._labels(model, probabilities.shape[1])
        ranked = np.argsort(-probabilities, axis=1)[:, :top_k]
        return [[(labels[i], float(row[i])) for i in order] for row, order in zip(probabilities, ranked, strict=True)]

    def _labels(self, model: str, count: int) -> list[str]:
        """Labels come from the classification extension, asked once per model with top-k = all classes."""
        if model in self._label_cache:
            return self._label_cache[model]
        metadata = self.metadata(model)
        request = pb.ModelInferRequest(model_name=model)
        for tensor in metadata.inputs:
            shape = [1 if d == -1 else d for d in tensor.shape]
            zeros: np.ndarray = np.zeros(shape, dtype=NUMPY_TYPES[tensor.datatype])
            request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=shape)
            request.raw_input_contents.append(zeros.tobytes())
        output = request.outputs.add(name=metadata.outputs[0].name)
        output.parameters["classification"].int64_param = count
        reply = self._call("ModelInfer", request)
        raw = reply.raw_output_contents[0]
        labels = [str(i) for i in range(count)]
        offset = 0
        while offset < len(raw):
            size = int.from_bytes(raw[offset : offset + 4], "little")
            parts = raw[offset + 4 : offset + 4 + size].decode().split(":", 2)
            if len(parts) == 3:
                labels[int(parts[1])] = parts[2]
            offset += 4 + size
        self._label_cache[model] = labels
        return labels

    def generate(self, model: str, n: int, *, seed: int | None = None, label: int | None = None) -> np.ndarray:
        """n images from a generator as uint8 [n, h, w, c]; a conditional one takes `label` (else cycles classes)."""
        metadata = self.metadata(model)
        latent_spec = next(t for t in metadata.inputs if t.datatype.startswith("FP"))
        rng = np.random.default_rng(seed)
        inputs: dict[str, np.ndarray] = {
            latent_spec.name: rng.standard_normal((n, *latent_spec.shape[1:])).astype(np.float32)
        }
        for tensor in metadata.inputs:
            if tensor.name != latent_spec.name:
                classes = self._class_count(model)
                values = np.full(n, label) if label is not None else np.arange(n) % classes
                inputs[tensor.name] = values.astype(NUMPY_TYPES[tensor.datatype])
        produced = next(iter(self.infer(model, inputs).values()))
        post = self._json_parameter(model, "postprocessing")
        return images.to_uint8(produced, post.get("range", (-1.0, 1.0)))

    def _class_count(self, model: str) -> int:
        parameters = self.config(model).parameters
        return int(parameters["num_classes"].string_value) if "num_classes" in parameters else 10


def channel_credentials(
    tls: bool = False,
    root_certificates: Path | str | None = None,
    certificate_chain: Path | str | None = None,
    private_key: Path | str | None = None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials from PEM files, or None for plaintext (no TLS asked for and no file given)."""
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("certificate_chain and private_key go together (mutual TLS)")
    if not (tls or root_certificates is not None or certificate_chain is not None):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(root_certificates), private_key=_read(private_key),
        certificate_chain=_read(certificate_chain),
    )


def token_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries a bearer token (none without one)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def _read(path: Path | str | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()
