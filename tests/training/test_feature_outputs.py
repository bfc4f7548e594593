"""A trained classifier's conv-block activations, exported as optional outputs after its logits and served: absent
unless named, equal to PyTorch's when named, and the primary path unchanged (issue 14, part 1).

The model is the session's dry-run digits_cnn, published by the training CLI (tests/training/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import tritonclient.grpc as triton
import tritonclient.http as triton_http

from cnnserve.contracts import features
from cnnserve.training.classifier.model import Classifier, ClassifierConfig, PixelClassifier
from cnnserve.training.export import ExportSpec, ParityError, export_model
from tests.conftest import ServerThread, loopback_settings

FEATURES = ("features.block1.relu", "features.block1.pool", "features.block2.relu", "features.block2.pool")
SHAPES = {"features.block1.relu": (32, 16, 16), "features.block1.pool": (32, 8, 8),
          "features.block2.relu": (64, 8, 8), "features.block2.pool": (64, 4, 4)}  # fmt: skip


@pytest.fixture(scope="module")
def server(classifier_repo: Path) -> Iterator[ServerThread]:
    with ServerThread(loopback_settings(classifier_repo)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.grpc_address) as c:
        yield c


def digits(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 16, 16), dtype=np.float32)


def images_input(images: np.ndarray, module: object = triton) -> object:
    tensor = module.InferInput("images", list(images.shape), "FP32")  # type: ignore[attr-defined]
    tensor.set_data_from_numpy(images)
    return tensor


def test_metadata_lists_logits_first_and_config_marks_the_features(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("digits_cnn")
    assert [o.name for o in metadata.outputs] == ["logits", *FEATURES]
    assert [tuple(o.shape[1:]) for o in metadata.outputs[1:]] == [SHAPES[name] for name in FEATURES]
    parameters = client.get_model_config("digits_cnn").config.parameters
    assert features.feature_outputs({k: v.string_value for k, v in parameters.items()}) == FEATURES
    assert parameters["optional_outputs"].string_value == ",".join(FEATURES)


def test_a_request_naming_no_outputs_gets_the_logits_alone(client: triton.InferenceServerClient,
                                                            server: ServerThread) -> None:  # fmt: skip
    result = client.infer("digits_cnn", [images_input(digits(3))])
    assert [o.name for o in result.get_response().outputs] == ["logits"]
    assert result.as_numpy("logits").shape == (3, 10)
    # the session that ran it was built for the logits alone, at warm-up
    assert frozenset({"logits"}) in server.server.models.get("digits_cnn").pruned_nodes


def test_named_feature_maps_are_what_the_graph_computes_and_share_a_batch(
    client: triton.InferenceServerClient, classifier_repo: Path
) -> None:
    images = digits(5, seed=1)
    wanted = [triton.InferRequestedOutput(name) for name in ("features.block1.relu", "features.block2.pool")]
    wanted.append(triton.InferRequestedOutput("logits", class_count=2))
    result = client.infer("digits_cnn", [images_input(images)], outputs=wanted)
    assert [o.name for o in result.get_response().outputs] == ["features.block1.relu", "features.block2.pool",
                                                               "logits"]  # fmt: skip
    whole = ort.InferenceSession(str(classifier_repo / "digits_cnn" / "1" / "model.onnx"),
                                 providers=["CPUExecutionProvider"])  # fmt: skip
    expected = dict(zip([o.name for o in whole.get_outputs()], whole.run(None, {"images": images}), strict=True))
    for name in ("features.block1.relu", "features.block2.pool"):
        got = result.as_numpy(name)
        assert got.shape == (5, *SHAPES[name])
        np.testing.assert_allclose(got, expected[name], atol=1e-5)
        assert (got >= 0).all()  # after a ReLU
    top = [entry.decode().split(":") for entry in result.as_numpy("logits")[:, 0]]
    assert [int(index) for _, index, _ in top] == list(expected["logits"].argmax(1))


def test_rest_serves_feature_maps_when_named(server: ServerThread) -> None:
    with triton_http.InferenceServerClient(server.rest_address) as rest:
        result = rest.infer(
            "digits_cnn",
            [images_input(digits(2), triton_http)],
            outputs=[triton_http.InferRequestedOutput("features.block2.relu", binary_data=True)],
        )
        assert result.as_numpy("features.block2.relu").shape == (2, 64, 8, 8)
        plain = rest.infer("digits_cnn", [images_input(digits(2), triton_http)])
        assert [o["name"] for o in plain.get_response()["outputs"]] == ["logits"]


def _pixels(n: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    return (torch.rand(n, 1, 16, 16, generator=g),)


class WrongFeatureInEager(PixelClassifier):
    """Eager PyTorch answers a feature map off by 0.5 that the traced graph does not: parity must name it."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = super().forward(pixels)
        assert isinstance(out, tuple)
        if torch.onnx.is_in_onnx_export():
            return out
        return (*out[:3], out[3] + 0.5, *out[4:])


def test_parity_covers_every_feature_output() -> None:
    torch.manual_seed(0)
    classifier = Classifier(ClassifierConfig()).eval()
    module = WrongFeatureInEager(classifier, [0.3], [0.4], with_features=True)
    names = module.feature_names(torch.rand(1, 1, 16, 16))
    assert names == FEATURES
    spec = ExportSpec("digits_cnn", ("images",), ("logits", *names), _pixels, (torch.rand(7, 1, 16, 16),))
    with pytest.raises(ParityError, match=r"features\.block2\.relu"):
        export_model(module, spec, {})
    good = export_model(PixelClassifier(classifier, [0.3], [0.4], with_features=True), spec, {})
    assert [o.name for o in good.model.graph.output] == ["logits", *FEATURES]
