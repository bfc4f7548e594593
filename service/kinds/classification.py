"""The classification kind: top-k predictions as the REST door's answer to a file, occlusion explanations (request
parameter `explain`, the /explain operation; explain.py), and the neuron atlas served beside the model
(contracts/features.py). The classification extension's "score:index:label" strings are generic (wire/encode.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.contracts import features
from cnnserve.contracts.scores import softmax
from cnnserve.service.errors import InvalidInput, ModelNotFound
from cnnserve.service.execution.images import DecodedImages
from cnnserve.service.kinds.base import (
    INFER,
    PNG_PARAMETERS,
    FileAnswer,
    FileRequest,
    Kind,
    ParameterValue,
    Plan,
    first_png,
    query_integer,
)
from cnnserve.service.kinds.explain import Explainer, ExplainPlan, plan_explanation
from cnnserve.service.registry.served import ServedModel
from cnnserve.service.settings import Settings
from cnnserve.service.types import ModelSpec
from cnnserve.service.wire.decode import Array, Buffer
from cnnserve.service.wire.encode import OutputTensor

EXPLAIN = features.EXPLAIN_PARAMETER
ATLAS = features.ATLAS_DIR
DEFAULT_TOP_K = 5
ATLAS_CONTENT_TYPES = {".png": "image/png", ".json": "application/json"}
ATLAS_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # one name, no folder: what the publisher writes


class ClassificationKind(Kind):
    name = "classification"
    precedence = 10
    own_parameters: ClassVar[frozenset[str]] = frozenset({EXPLAIN})
    post_operations: ClassVar[Mapping[str, Mapping[str, ParameterValue]]] = {
        EXPLAIN: {EXPLAIN: features.EXPLAIN_METHODS[0]}
    }

    def __init__(self, spec: ModelSpec, config_path: Path, settings: Settings) -> None:
        super().__init__(spec, config_path, settings)
        self.explainer = Explainer(settings.max_explain_copies)
        self.scores = spec.label_output or spec.outputs[0].name
        """What the REST door's predictions rank."""

    @classmethod
    def describes(cls, spec: ModelSpec) -> bool:
        """Labels or an image input: a classifier brought from elsewhere, answering files with predictions."""
        return spec.label_output is not None or spec.image_input is not None

    # -- explanations ----------------------------------------------------------------------------------------------

    def plan(self, request: pb.ModelInferRequest, raw_inputs: Sequence[Buffer] | None) -> Plan:
        plan = super().plan(request, raw_inputs)
        parameters = request.parameters
        if not parameters or EXPLAIN not in parameters:  # `in` first: indexing a protobuf map inserts the key
            return plan
        explain = plan_explanation(request, self.spec, raw_inputs)
        if explain is None:
            return plan
        return Plan(explain.request, explain.raw_inputs, keep_pixels=explain.png,
                    model_outputs=not explain.explanation_only, extra=True, png_reply=features.EXPLANATION_OUTPUT,
                    own=explain)  # fmt: skip

    async def extra_outputs(self, plan: Plan, model: ServedModel, inputs: dict[str, Array],
                            images: DecodedImages | None, deadline: float | None) -> list[OutputTensor]:  # fmt: skip
        explain: ExplainPlan | None = plan.own
        if explain is None:
            return []
        spec = self.spec
        target = spec.image_input.name if spec.image_input is not None else spec.inputs[0].name
        grid = self.explainer.grid(explain, spec, inputs[target])  # its refusals come before any copy is queued
        greys = None
        if images is not None and images.pixels and images.size is None:  # files, unpadded: blend over them
            greys = [np.round(pixels.mean(axis=-1)).astype(np.uint8) for pixels in images.pixels]
        return await self.explainer.explain(model, inputs[target], explain, grid, deadline, greys)

    # -- the REST door: predictions, or an explanation ---------------------------------------------------------------

    def file_request(self, operation: str, query: Mapping[str, str], png: bool) -> FileRequest:
        if operation == EXPLAIN:
            parameters: dict[str, ParameterValue] = {EXPLAIN: features.EXPLAIN_METHODS[0]}
            for key in (features.PATCH_PARAMETER, features.STRIDE_PARAMETER, features.TARGET_CLASS_PARAMETER):
                value = query_integer(query, key)
                if value is not None:
                    parameters[key] = value
            if png:
                parameters.update(PNG_PARAMETERS)
            return FileRequest((features.EXPLANATION_OUTPUT, features.EXPLAINED_CLASS_OUTPUT), parameters)
        if operation != INFER:
            return super().file_request(operation, query, png)
        _top_k(query)  # refused before anything runs
        return FileRequest((self.scores,), {})

    def file_answer(self, operation: str, tensors: Sequence[OutputTensor], query: Mapping[str, str], png: bool
                    ) -> FileAnswer:  # fmt: skip
        labels = self.spec.labels
        if operation == EXPLAIN:
            if png:
                return first_png(tensors, features.EXPLANATION_OUTPUT)
            explanation, explained = (np.asarray(t.array) for t in tensors)
            index = int(explained[0])
            return {"explained_class": index, "label": labels[index] if index < len(labels) else str(index),
                    "explanation": np.round(explanation[0].astype(np.float64), 6).tolist()}  # fmt: skip
        scores = np.asarray(tensors[0].array)
        item = scores[0] if self.spec.max_batch_size > 0 else scores
        return {"predictions": predictions(item, labels, _top_k(query))}

    # -- the atlas -------------------------------------------------------------------------------------------------

    def read_file(self, operation: str, version_dir: Path, file: str) -> tuple[bytes, str]:
        """A plain file of the version's atlas/ folder, PNG or JSON, and nothing outside that folder once every
        symlink is resolved."""
        if operation != ATLAS:
            return super().read_file(operation, version_dir, file)
        name, version = self.spec.name, version_dir.name
        if features.ATLAS_PARAMETER not in self.spec.parameters:
            raise ModelNotFound(f"model '{name}' version {version} has no atlas (config parameter "
                                f"'{features.ATLAS_PARAMETER}')")  # fmt: skip
        content_type = ATLAS_CONTENT_TYPES.get(Path(file).suffix)
        if not ATLAS_FILE_NAME.fullmatch(file) or content_type is None or ".." in file:
            raise ModelNotFound(f"model '{name}' version {version}: no atlas file {file!r} (atlas files are one "
                                f"name ending in {', '.join(ATLAS_CONTENT_TYPES)})")  # fmt: skip
        missing = ModelNotFound(f"model '{name}' version {version} has no atlas file {file!r}")
        folder = version_dir / ATLAS
        try:
            root, path = folder.resolve(strict=True), (folder / file).resolve(strict=True)
        except OSError:
            raise missing from None
        if not root.is_relative_to(version_dir.resolve()) or path.parent != root or not path.is_file():
            raise missing
        return path.read_bytes(), content_type


def _top_k(query: Mapping[str, str]) -> int:
    top_k = query_integer(query, "top_k")
    if top_k == 0:
        raise InvalidInput(f"query parameter top_k must be a positive integer, got {query['top_k']!r}")
    return DEFAULT_TOP_K if top_k is None else top_k


def predictions(scores: Array, labels: Sequence[str], k: int) -> list[dict[str, object]]:
    """One item's top k of softmax(scores), best first."""
    probabilities = softmax(np.asarray(scores, dtype=np.float64).reshape(-1))
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [
        {"label": labels[i] if i < len(labels) else str(i), "index": int(i), "score": float(probabilities[i])}
        for i in order
    ]
