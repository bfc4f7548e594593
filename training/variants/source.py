"""The classifier a variant is made from, as its repository entry states it: newest version, config, labels, the
graph's image input and class output, and the image recipe (the config's, or the graph's shape for a model brought
from elsewhere that has none). Reads files only: no torch, no session."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from cnnserve.contracts import layout, variants
from cnnserve.contracts.imaging import Preprocessing
from cnnserve.training.publish import latest_model, versions

logger = logging.getLogger(__name__)


class VariantError(ValueError):
    """A source model, image source or option a variant cannot be made from; the message names it."""


@dataclass(frozen=True)
class SourceModel:
    name: str
    version: int
    path: Path  # <repo>/<name>/<version>/model.onnx
    config: dict[str, Any]  # config.json as written
    labels: tuple[str, ...]  # () when the model has no labels file
    input_name: str  # the graph's one input: images
    output_name: str  # the class scores (label_output, else the graph's first output)
    recipe: Preprocessing  # how an image file becomes one input item

    @property
    def preferred_batch_size(self) -> int:
        """The batch the server aims at: the largest preferred batch size, else max_batch_size, else 1."""
        preferred = (self.config.get("dynamic_batching") or {}).get("preferred_batch_sizes") or []
        if preferred:
            return int(max(preferred))
        return max(1, int(self.config.get("max_batch_size") or 1))

    @property
    def intra_op_threads(self) -> int:
        return int((self.config.get("session") or {}).get("intra_op_threads", 0))


def read_source(repo: Path, name: str) -> SourceModel:
    model_dir = repo / name
    path = latest_model(repo, name)
    if path is None:
        raise VariantError(f"model '{name}' has no published version in {repo} (expected {model_dir}/<n>/model.onnx)")
    config_path = model_dir / layout.CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    except (OSError, ValueError) as err:
        raise VariantError(f"{config_path}: cannot read it as JSON: {err}") from None
    if not isinstance(config, dict):
        raise VariantError(f"{config_path}: must hold a JSON object")
    parameters = config.get("parameters") or {}
    if variants.QUANTIZED_FROM in parameters:
        raise VariantError(f"model '{name}' is itself a variant of {parameters[variants.QUANTIZED_FROM]}; "
                           "make variants of the source")  # fmt: skip
    graph = onnx.load(str(path), load_external_data=False).graph
    initialisers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialisers]
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        found = ", ".join(f"{i.name} ({onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type)})" for i in inputs)
        raise VariantError(f"model '{name}': a classifier variant needs one FP32 image input, the graph has {found}")
    output_name = str(config.get("label_output") or graph.output[0].name)
    if output_name not in {o.name for o in graph.output}:
        raise VariantError(f"model '{name}': label_output '{output_name}' is not a graph output")
    labels_file = config.get("labels_file")
    labels: tuple[str, ...] = ()
    if labels_file:
        lines = (model_dir / str(labels_file)).read_text(encoding="utf-8").splitlines()
        labels = tuple(line.strip() for line in lines if line.strip())
    return SourceModel(name, versions(model_dir)[-1], path, config, labels, inputs[0].name, output_name,
                       _recipe(name, config, inputs[0]))  # fmt: skip


def _recipe(name: str, config: dict[str, Any], graph_input: Any) -> Preprocessing:
    hints = config.get("preprocessing")
    if hints:
        try:
            recipe = Preprocessing.from_hints(hints)
        except ValueError as err:
            raise VariantError(f"model '{name}': config preprocessing: {err}") from None
        if recipe.padded:
            raise VariantError(f"model '{name}': images of their own size (resize 'pad') are not a classifier's")
        return recipe
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in graph_input.type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] not in (1, 3) or min(dims[2:]) < 1:
        raise VariantError(f"model '{name}': its config has no preprocessing and input {list(dims)} is not "
                           "[N, 1|3, H, W]; add a preprocessing block (docs/model-repository.md)")  # fmt: skip
    logger.warning("event=recipe_from_graph model=%s channels=%d height=%d width=%d scale=1/255", name, dims[1],
                   dims[2], dims[3])  # fmt: skip
    return Preprocessing(height=dims[2], width=dims[3], channels=dims[1], mean=(0.0,) * dims[1],
                         std=(1.0,) * dims[1])  # fmt: skip
