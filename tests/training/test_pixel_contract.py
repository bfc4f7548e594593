"""A classifier trained and exported by cnnserve takes image pixels as users have them: a generic client
(tritonclient) that sends scikit-learn's digits as [0, 1] pixels, with nothing from our SDK, gets them named right,
and ModelConfig tells it so (`input_range` "0,1").

Three epochs (about 5 s on two cores) reach ~94% validation accuracy; a graph that expected normalised input would
answer such pixels at chance level (the 4% of issue 11).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import tritonclient.grpc as triton
from sklearn.datasets import load_digits
from torch.nn import functional

from cnnserve.training.classifier.job import run_classifier
from cnnserve.training.classifier.kind import ClassifierOptions
from tests.conftest import ServerThread, loopback_settings

DIGITS = 400


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("repo")
    run_classifier(ClassifierOptions(repository=repo, out_dir=tmp_path_factory.mktemp("run"), epochs=3, threads=1,
                                     progress_bar=False))  # fmt: skip
    with ServerThread(loopback_settings(repo)) as running:
        yield running


def sklearn_pixels(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n digits as a user has them: 0..16 over 16 -> [0, 1], upscaled 8x8 -> 16x16 bilinearly."""
    bunch = load_digits()
    small = torch.from_numpy(bunch.images[:n].astype(np.float32) / 16.0)[:, None]
    pixels = functional.interpolate(small, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1)
    return pixels.numpy(), bunch.target[:n]


def test_tritonclient_sending_plain_pixels_gets_the_digits_named(served: ServerThread) -> None:
    pixels, target = sklearn_pixels(DIGITS)
    assert pixels.min() >= 0 and pixels.max() <= 1
    with triton.InferenceServerClient(served.grpc_address) as client:
        parameters = client.get_model_config("digits_cnn").config.parameters
        assert parameters["input_range"].string_value == "0,1"
        predicted = []
        for start in range(0, DIGITS, 100):
            batch = pixels[start : start + 100]
            images = triton.InferInput("images", list(batch.shape), "FP32")
            images.set_data_from_numpy(batch)
            top1 = triton.InferRequestedOutput("logits", class_count=1)
            answer = client.infer("digits_cnn", [images], outputs=[top1]).as_numpy("logits")
            predicted += [int(item.split(b":")[2]) for item in answer.reshape(-1)]  # b"score:index:label"
    accuracy = float(np.mean(np.asarray(predicted) == target))
    assert accuracy >= 0.9, f"accuracy {accuracy:.3f} on {DIGITS} plain-pixel digits"


def test_the_published_graph_is_what_parity_checked(served: ServerThread) -> None:
    """The file the server loads takes pixels itself: its first nodes subtract the mean and divide by the std."""
    repo = served.settings.model_repository
    model = onnx.load(str(Path(repo) / "digits_cnn" / "1" / "model.onnx"))
    assert [node.op_type for node in model.graph.node[:2]] == ["Sub", "Div"]
