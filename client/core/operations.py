"""Every operation of the SDK, once: each public method is a plan (steps.py) that yields the calls it needs and
returns the answer, and the caches they fill live here. Client and AsyncClient each hold one Operations and have a
method of the same name and parameters per plan, which runs it (tests/client/test_shells.py holds them to that).

Calls that need not wait for each other (one per image) travel as a tuple: the asyncio shell sends them at once,
the blocking one in turn. File reads and image decoding are Work, which the asyncio shell runs off its loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from grpc_health.v1 import health_pb2

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.client.core import classify, explain, generate, hints, segment, stylize, tensors
from cnnserve.client.core.explain import Explanation
from cnnserve.client.core.segment import Segmentation
from cnnserve.client.core.server import Health, ModelEntry, model_entries
from cnnserve.client.core.steps import Call, Plan, Work
from cnnserve.client.images import ImageLike


class Operations:
    def __init__(self) -> None:
        # Asked once per model for the client's life (as the SDK always has): a reload that changes them needs a
        # new client.
        self._configs: dict[str, pb.ModelConfig] = {}
        self._labels: dict[str, list[str]] = {}

    # -- server ----------------------------------------------------------------------------------------------

    def health(self) -> Plan[Health]:
        live, ready = yield (Call("ServerLive", pb.ServerLiveRequest()), Call("ServerReady", pb.ServerReadyRequest()))
        return Health(live=live.live, ready=ready.ready)

    def health_check(self, service: str = "ready") -> Plan[bool]:
        reply = yield Call("Check", health_pb2.HealthCheckRequest(service=service), service="health")
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def models(self) -> Plan[list[ModelEntry]]:
        return model_entries((yield Call("RepositoryIndex", pb.RepositoryIndexRequest())))

    def metadata(self, model: str, version: str = "") -> Plan[pb.ModelMetadataResponse]:
        reply: pb.ModelMetadataResponse = yield Call(
            "ModelMetadata", pb.ModelMetadataRequest(name=model, version=version)
        )
        return reply

    def config(self, model: str) -> Plan[pb.ModelConfig]:
        if model not in self._configs:
            reply = yield Call("ModelConfig", pb.ModelConfigRequest(name=model), shared=True)
            self._configs[model] = reply.config
        return self._configs[model]

    # -- inference ---------------------------------------------------------------------------------------------

    def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] = (), version: str = ""
    ) -> Plan[dict[str, np.ndarray]]:
        reply = yield Call("ModelInfer", tensors.infer_request(model, inputs, outputs, version))
        return tensors.infer_outputs(reply)

    def classify(
        self, model: str, images: Sequence[ImageLike], top_k: int = 5, *, send_files: bool | None = None
    ) -> Plan[list[list[tuple[str, float]]]]:
        """One request for all images; labels from the label probe (once per model)."""
        recipe = hints.preprocessing(model, (yield from self.config(model)))
        metadata = yield from self.metadata(model)
        input_name = hints.image_input(recipe, metadata)
        inputs = yield Work(lambda: classify.inputs(images, recipe, input_name, send_files))
        logits = tensors.first_output((yield Call("ModelInfer", tensors.infer_request(model, inputs))))
        labels = yield from self._class_labels(model, metadata, logits.shape[1])
        return classify.rank(logits, labels, top_k)

    def _class_labels(self, model: str, metadata: pb.ModelMetadataResponse, count: int) -> Plan[list[str]]:
        """Labels come from the classification extension, asked once per model with top-k = all classes."""
        if model not in self._labels:
            reply = yield Call("ModelInfer", classify.label_probe(model, metadata, count), shared=True)
            self._labels[model] = classify.probe_labels(reply, count)
        return self._labels[model]

    def generate(
        self, model: str, n: int, *, seed: int | None = None, label: int | None = None, truncation: float | None = None
    ) -> Plan[np.ndarray]:
        config, produced = yield from self._generated(model, n, seed, label, truncation, png=False)
        return generate.pixels(produced, config)

    def generate_png(
        self, model: str, n: int, *, seed: int | None = None, label: int | None = None, truncation: float | None = None
    ) -> Plan[list[bytes]]:
        _, produced = yield from self._generated(model, n, seed, label, truncation, png=True)
        return list(produced)

    def _generated(
        self, model: str, n: int, seed: int | None, label: int | None, truncation: float | None, *, png: bool
    ) -> Plan[tuple[pb.ModelConfig, np.ndarray]]:
        """The generator's config (its classes and output range) and its output: numbers, or PNG files."""
        config = yield from self.config(model)
        metadata = yield from self.metadata(model)
        request = generate.request(model, config, metadata, n, seed=seed, label=label, truncation=truncation, png=png)
        return config, tensors.first_output((yield Call("ModelInfer", request)))

    def explain(
        self,
        model: str,
        images: Sequence[ImageLike],
        *,
        patch: int | None = None,
        stride: int | None = None,
        target_class: int | None = None,
        with_png: bool = False,
    ) -> Plan[list[Explanation]]:
        """A request per image (and per heatmap picture, with_png), all independent; labels from the label probe."""
        recipe = hints.preprocessing(model, (yield from self.config(model)))
        hints.require_files(model, recipe)
        metadata = yield from self.metadata(model)
        input_name = hints.image_input(recipe, metadata)
        labels = yield from self._class_labels(model, metadata, classify.class_count(metadata))
        forms = (False, True) if with_png else (False,)  # numbers; the picture the server draws

        def build() -> list[pb.ModelInferRequest]:
            return [explain.request(model, image, input_name, patch=patch, stride=stride, target_class=target_class,
                                    png=png) for image in images for png in forms]  # fmt: skip

        requests = yield Work(build)
        replies = iter((yield tuple(Call("ModelInfer", request) for request in requests)))
        found = []
        for _ in images:
            explained = explain.parse(tensors.infer_outputs(next(replies)), labels)
            if with_png:
                explained = dataclasses.replace(explained, png=explain.png_of(tensors.infer_outputs(next(replies))))
            found.append(explained)
        return found

    def segment(
        self, model: str, images: Sequence[ImageLike], *, with_mask: bool = True, min_score: float = 0.0
    ) -> Plan[list[Segmentation]]:
        """A request per image, so images of different sizes never wait for each other (the server batches those
        of one size)."""
        config = yield from self.config(model)
        recipe = hints.preprocessing(model, config)
        hints.require_files(model, recipe)
        input_name = hints.image_input(recipe, (yield from self.metadata(model)))
        requests = yield Work(lambda: [segment.request(model, image, input_name, with_mask) for image in images])
        replies = yield tuple(Call("ModelInfer", request) for request in requests)
        labels = segment.labels(config)
        return [segment.parse(tensors.infer_outputs(reply), labels, min_score) for reply in replies]

    def stylize_png(self, model: str, images: Sequence[ImageLike]) -> Plan[list[bytes]]:
        """A request per image: images of one size may share the server's batches, other sizes never wait."""
        config = yield from self.config(model)
        output = stylize.output_name(model, config)
        input_name = hints.image_input(hints.preprocessing(model, config), (yield from self.metadata(model)))
        requests = yield Work(lambda: [stylize.request(model, image, input_name, output) for image in images])
        replies = yield tuple(Call("ModelInfer", request) for request in requests)
        return [stylize.png_of(tensors.infer_outputs(reply), output) for reply in replies]

    def stylize(self, model: str, images: Sequence[ImageLike]) -> Plan[list[np.ndarray]]:
        files = yield from self.stylize_png(model, images)
        decoded: list[np.ndarray] = yield Work(lambda: stylize.decoded(files))
        return decoded
