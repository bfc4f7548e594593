"""Report cards: thresholds, the SVC baseline and the ONNX judge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cnnserve.training.classifier.model import Classifier, ClassifierConfig
from cnnserve.training.classifier.report import svc_baseline
from cnnserve.training.data import load_dataset
from cnnserve.training.export import ExportSpec, build_metadata, export_model
from cnnserve.training.gan.judge import Judge
from cnnserve.training.gan.report import conditional_gan_checks, gan_checks
from cnnserve.training.report import card, check


def _one_hot(labels: np.ndarray, confidence: float) -> np.ndarray:
    p = np.full((len(labels), 10), (1 - confidence) / 9)
    p[np.arange(len(labels)), labels] = confidence
    return p


def test_svc_baseline_on_raw_digit_features_is_about_98_9_percent() -> None:
    accuracy = svc_baseline(load_dataset("digits"))
    assert accuracy is not None and 0.975 <= accuracy <= 0.995


def test_svc_baseline_is_skipped_for_other_datasets(image_folder: Path) -> None:
    assert svc_baseline(load_dataset(str(image_folder))) is None


def test_unconditional_card_needs_confident_and_balanced_labels() -> None:
    balanced = _one_hot(np.arange(1000) % 10, 0.95)
    checks, metrics = gan_checks(balanced)
    assert all(c.passed for c in checks) and metrics["class_shares"] == [0.1] * 10

    one_class = _one_hot(np.zeros(1000, dtype=int), 0.99)
    assert not all(c.passed for c in gan_checks(one_class)[0])

    unsure = _one_hot(np.arange(1000) % 10, 0.5)
    unsure[:650] = balanced[:650]  # 65% confident: a plain DCGAN's score
    checks, _ = gan_checks(unsure)
    assert [c.passed for c in checks] == [False, True]


def test_conditional_card_counts_only_the_class_asked_for() -> None:
    asked = np.arange(1000) % 10
    assert conditional_gan_checks(_one_hot(asked, 0.95), asked)[0][0].passed
    shifted = _one_hot((asked + 1) % 10, 0.95)
    checks, metrics = conditional_gan_checks(shifted, asked)
    assert not checks[0].passed and metrics["per_class_hits"] == [0.0] * 10


def test_card_passes_only_when_every_check_does() -> None:
    assert card("m", [check("a", 1, 0.5), check("b", 0.4, 0.5)], {})["passed"] is False
    assert card("m", [check("a", 1, 0.5)], {})["passed"] is True
    assert card("m", [], {})["passed"] is None


def test_judge_reads_a_published_classifier(classifier_repo: Path) -> None:
    judge = Judge.find("digits_cnn", classifier_repo)
    assert judge.shape == (1, 16, 16)
    assert judge.labels == [str(i) for i in range(10)]
    p = judge.probabilities(np.random.default_rng(0).random((3, 1, 16, 16), dtype=np.float32))
    assert p.shape == (3, 10) and np.allclose(p.sum(axis=1), 1, atol=1e-5)
    assert Judge.find(str(judge.path), Path("elsewhere")).path == judge.path
    with pytest.raises(ValueError):
        judge.probabilities(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(FileNotFoundError):
        Judge.find("no_such_model", classifier_repo)


def test_judge_applies_the_mean_and_std_of_a_classifier_published_before_the_pixel_contract(tmp_path: Path) -> None:
    """Older classifiers took normalised input and carried mean/std in their preprocessing metadata."""
    torch.manual_seed(0)
    classifier = Classifier(ClassifierConfig()).eval()
    spec = ExportSpec("old", ("images",), ("logits",), lambda n, g: (torch.randn(n, 1, 16, 16, generator=g),),
                      (torch.randn(7, 1, 16, 16),))  # fmt: skip
    old = {"height": 16, "width": 16, "channels": 1, "layout": "NCHW", "scale": 1 / 255, "mean": [0.3], "std": [0.4]}
    exported = export_model(classifier, spec, build_metadata([str(i) for i in range(10)], old, {}, {}))
    (tmp_path / "model.onnx").write_bytes(exported.model.SerializeToString())
    pixels = np.random.default_rng(1).random((4, 1, 16, 16), dtype=np.float32)
    with torch.no_grad():
        logits = classifier(torch.from_numpy((pixels - 0.3) / 0.4)).numpy()
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(Judge(tmp_path / "model.onnx").probabilities(pixels), expected, atol=1e-5)
