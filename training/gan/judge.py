"""The judge of a GAN's report card: a published classifier run by ONNX Runtime on [0, 1] images, answering class
probabilities and its penultimate features (where the Frechet distance is measured)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cnnserve.contracts.imaging import Preprocessing
from cnnserve.contracts.scores import softmax
from cnnserve.training.publish import latest_model


class Judge:
    """A published classifier run by ONNX Runtime on [0, 1] images. Classifiers published since the pixel contract
    normalise in their graph; older ones carry mean/std in their preprocessing metadata, applied here."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        props = self.session.get_modelmeta().custom_metadata_map
        if "preprocessing" not in props:
            raise ValueError(f"judge {path} has no 'preprocessing' metadata; is it a cnnserve classifier?")
        recipe = Preprocessing.from_hints(json.loads(props["preprocessing"]))
        self.labels: list[str] = json.loads(props.get("labels", "[]"))
        self.mean = np.asarray(recipe.mean, np.float32)[None, :, None, None]
        self.std = np.asarray(recipe.std, np.float32)[None, :, None, None]
        self.shape = (recipe.channels, recipe.height, recipe.width)
        self.input_name = self.session.get_inputs()[0].name
        self._features: Any = None  # a second session that also answers the penultimate layer, built when asked

    def _feature_session(self) -> Any:
        """The judge's graph with the input of the node that makes its first output (the logits' dense layer: the
        penultimate features) added as an output; FID is measured there."""
        if self._features is None:
            import onnx
            import onnxruntime as ort

            model = onnx.load(str(self.path))
            logits = model.graph.output[0].name
            producer = next((n for n in model.graph.node if logits in n.output), None)
            if producer is None or not producer.input:
                raise ValueError(f"judge {self.path}: no node makes its first output {logits!r}")
            penultimate = onnx.helper.make_tensor_value_info(producer.input[0], onnx.TensorProto.FLOAT, None)
            model.graph.output.append(penultimate)
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            self._features = (session, [logits, producer.input[0]])
        return self._features

    def judge(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """images: [N, C, H, W] float32 in [0, 1] -> (softmax [N, num_classes], penultimate features [N, D])."""
        self._check_shape(images)
        session, names = self._feature_session()
        x = ((images - self.mean) / self.std).astype(np.float32)
        parts = [session.run(names, {self.input_name: x[i : i + 256]}) for i in range(0, len(x), 256)]
        logits = np.concatenate([p[0] for p in parts])
        features = np.concatenate([np.asarray(p[1]).reshape(len(p[1]), -1) for p in parts])
        return softmax(logits, axis=1), features

    def _check_shape(self, images: np.ndarray) -> None:
        if tuple(images.shape[1:]) != self.shape:
            raise ValueError(f"judge {self.path} takes images {self.shape}, got {tuple(images.shape[1:])}")

    @classmethod
    def find(cls, reference: str, repo: Path) -> Judge:
        """`reference` is a model.onnx path, a model folder, or a model name in `repo` (newest version)."""
        path = Path(reference)
        if path.is_file():
            return cls(path)
        candidate = latest_model(path.parent, path.name) if path.is_dir() else latest_model(repo, reference)
        if candidate is None:
            raise FileNotFoundError(f"judge '{reference}': no model file, model folder or model in {repo}")
        return cls(candidate)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """images: [N, C, H, W] float32 in [0, 1] -> softmax [N, num_classes]."""
        self._check_shape(images)
        x = ((images - self.mean) / self.std).astype(np.float32)
        logits = np.concatenate([self.session.run(None, {self.input_name: x[i : i + 256]})[0]
                                 for i in range(0, len(x), 256)])  # fmt: skip
        return softmax(logits, axis=1)
