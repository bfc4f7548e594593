"""Report cards: each run measures its own model against fixed thresholds, prints PASS/FAIL, and the card goes into
report.json and the ONNX metadata. A failing card still publishes, marked `passed: false`.

Classifier: validation accuracy >= 99% and not below an SVC baseline on the identical split (digits only).
GANs: a trained classifier (the "judge", an ONNX model from the repository) labels 1,000 generated images, and
its penultimate features give a Frechet distance; diversity is measured at native resolution (gan_evaluation.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnserve.contracts.imaging import Preprocessing
from cnnserve.contracts.scores import softmax
from cnnserve.training.data import DIGITS, DataSplit
from cnnserve.training.publish import latest_model

logger = logging.getLogger(__name__)

MIN_ACCURACY = 0.99  # classifier validation accuracy on digits
CONFIDENCE = 0.9  # a generated image counts when the judge's softmax confidence is at least this
MIN_CONFIDENT = 0.85  # unconditional GAN: share of generated images the judge labels confidently
MIN_CLASS_SHARE_TIMES_CLASSES = 0.5  # each class >= 0.5 / num_classes of confident labels (5% for 10 classes)
MIN_CONDITIONAL_HITS = 0.98  # conditional GAN: share labelled confidently as the class asked for
MIN_CLASS_DIVERSITY = 0.7  # conditional GAN: every class's samples at least this diverse, relative to real ones
MIN_DIVERSITY = 0.85  # unconditional GAN: all samples at least this diverse, relative to real digits
GAN_REPORT_SAMPLES = 1000


@dataclass(frozen=True)
class Check:
    name: str  # what was measured
    value: float  # the measurement
    threshold: float  # the least value that passes (rule ">="), or the most (rule "<=")
    passed: bool
    rule: str = ">="


def card(model: str, checks: Sequence[Check], metrics: dict[str, Any]) -> dict[str, Any]:
    """The report card as report.json stores it; `passed` is null when no threshold applies (other datasets)."""
    return {
        "model": model,
        "passed": all(c.passed for c in checks) if checks else None,
        "checks": [c.__dict__ for c in checks],
        "metrics": metrics,
    }


def check(name: str, value: float, threshold: float) -> Check:
    return Check(name, round(float(value), 6), round(float(threshold), 6), bool(value >= threshold))


def check_at_most(name: str, value: float, threshold: float) -> Check:
    """A ceiling: passes when value <= threshold (a distance, a ratio of distances)."""
    return Check(name, round(float(value), 6), round(float(threshold), 6), bool(value <= threshold), "<=")


def announce(report: dict[str, Any], publishing: bool = True) -> None:
    """Print the card; a failing one loudly (published marked passed=false, unless `publishing` is False)."""
    verdict = {True: "PASS", False: "FAIL", None: "NO THRESHOLDS"}[report["passed"]]
    print(f"report card {report['model']}: {verdict}")
    for c in report["checks"]:
        mark = "ok  " if c["passed"] else "FAIL"
        print(f"  [{mark}] {c['name']}: {c['value']:.4f} (needs {c.get('rule', '>=')} {c['threshold']:.4f})")
    if report["passed"] is False:
        then = "publishing anyway with report.passed=false" if publishing else "not publishing"
        logger.warning("report card FAILED model=%s; %s", report["model"], then)


def svc_baseline(split: DataSplit) -> float | None:
    """Accuracy of SVC(gamma=0.001, C=10) on the raw 8x8 digits (values 0..16) of the identical split.

    gamma=0.001 is tuned for 0..16 features (98.9% here); on features scaled to [0, 1] it would need gamma=0.256.
    """
    if split.name != DIGITS:
        return None
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC

    bunch = load_digits()
    features, target = bunch.data, bunch.target
    svc = SVC(gamma=0.001, C=10).fit(features[split.train_index], target[split.train_index])
    return float(np.mean(svc.predict(features[split.val_index]) == target[split.val_index]))


def classifier_checks(split: DataSplit, val_accuracy: float, svc_accuracy: float | None) -> list[Check]:
    if split.name != DIGITS or svc_accuracy is None:
        return []
    return [check("val_accuracy", val_accuracy, MIN_ACCURACY), check("val_accuracy_vs_svc", val_accuracy, svc_accuracy)]


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


def gan_checks(probabilities: np.ndarray) -> tuple[list[Check], dict[str, Any]]:
    """Unconditional: share labelled confidently, and each class's share of those labels."""
    num_classes = probabilities.shape[1]
    confident = probabilities.max(axis=1) >= CONFIDENCE
    labels = probabilities.argmax(axis=1)[confident]
    shares = np.bincount(labels, minlength=num_classes) / max(len(labels), 1)
    checks = [
        check("confident_share", confident.mean(), MIN_CONFIDENT),
        check("min_class_share", shares.min(), MIN_CLASS_SHARE_TIMES_CLASSES / num_classes),
    ]
    metrics = {"samples": len(probabilities), "class_shares": [round(float(s), 4) for s in shares]}
    return checks, metrics


def conditional_gan_checks(probabilities: np.ndarray, asked: np.ndarray) -> tuple[list[Check], dict[str, Any]]:
    """Conditional: share labelled confidently as the class asked for (equal numbers asked per class)."""
    hit = (probabilities.max(axis=1) >= CONFIDENCE) & (probabilities.argmax(axis=1) == asked)
    per_class = [float(hit[asked == c].mean()) for c in range(probabilities.shape[1]) if np.any(asked == c)]
    checks = [check("asked_class_confident_share", hit.mean(), MIN_CONDITIONAL_HITS)]
    metrics = {"samples": len(probabilities), "per_class_hits": [round(s, 4) for s in per_class]}
    return checks, metrics
