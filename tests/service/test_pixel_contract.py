"""The tensor contract is pixels: ModelConfig states each model's value ranges, a model that normalises in its graph
takes plain [0, 1] pixels from any client, and models published before the contract (mean/std in the config,
generators in [-1, 1]) serve exactly as they did.

Real ONNX models (tests/onnx_models.py), a real server, tritonclient; expected answers computed here with Pillow and
numpy, not with the server's own preprocessing code.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as triton
from PIL import Image

from cnnserve.contracts.imaging import NORMALISED_RANGE
from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("repo")
    onnx_models.write_classifier(repo)  # before the contract: mean 0.5, std 0.25 in its preprocessing
    onnx_models.write_conditional_generator(repo)  # before the contract: range [-1, 1]
    onnx_models.write_pixel_classifier(repo)
    onnx_models.write_pixel_generator(repo)
    with ServerThread(loopback_settings(repo)) as running:
        yield running


def parameters(client: triton.InferenceServerClient, model: str) -> dict[str, str]:
    config = client.get_model_config(model).config
    return {key: value.string_value for key, value in config.parameters.items()}


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def grey_4x4(file: bytes) -> np.ndarray:
    """A file as [1, 4, 4] pixels in [0, 1]: grey, bilinear to 4x4, / 255."""
    grey = Image.open(io.BytesIO(file)).convert("L").resize((4, 4), Image.Resampling.BILINEAR)
    return (np.asarray(grey, dtype=np.float32) / 255)[None]


def infer(client: triton.InferenceServerClient, model: str, tensor: np.ndarray, datatype: str = "FP32") -> np.ndarray:
    entry = triton.InferInput("images", list(tensor.shape), datatype)
    entry.set_data_from_numpy(tensor)
    logits: np.ndarray = client.infer(model, [entry]).as_numpy("logits")
    return logits


def test_model_config_states_the_value_ranges(client: triton.InferenceServerClient) -> None:
    assert parameters(client, "pixels")["input_range"] == "0,1"
    assert parameters(client, "pixelgen")["output_range"] == "0,1"
    assert parameters(client, "cgen")["output_range"] == "-1,1"
    old = parameters(client, "classifier")["input_range"]
    assert old == NORMALISED_RANGE and "not pixels" in old
    with pytest.raises(ValueError):
        [float(v) for v in old.split(",")]  # a client that parses it as numbers stops instead of sending pixels
    assert "input_range" not in parameters(client, "cgen") and "output_range" not in parameters(client, "pixels")


def test_a_range_the_config_states_itself_wins(tmp_path_factory: pytest.TempPathFactory) -> None:
    repo = tmp_path_factory.mktemp("stated")
    onnx_models.write_classifier(repo, parameters={"input_range": "0,255"})
    with ServerThread(loopback_settings(repo)) as running, triton.InferenceServerClient(running.grpc_address) as c:
        assert parameters(c, "classifier")["input_range"] == "0,255"


def test_plain_pixels_need_no_recipe_beyond_resize(client: triton.InferenceServerClient) -> None:
    pixels = np.random.default_rng(0).random((5, 1, 4, 4), dtype=np.float32)
    expected = onnx_models.classifier_reference((pixels - 0.5) / 0.25)
    np.testing.assert_allclose(infer(client, "pixels", pixels), expected, rtol=1e-5, atol=1e-5)


def test_files_reach_a_pixel_model_as_pixels(client: triton.InferenceServerClient) -> None:
    rng = np.random.default_rng(1)
    files = [png(rng.integers(0, 256, (8, 8), dtype=np.uint8)) for _ in range(3)]
    pixels = np.stack([grey_4x4(f) for f in files])
    expected = onnx_models.classifier_reference((pixels - 0.5) / 0.25)
    answer = infer(client, "pixels", np.array(files, dtype=object), "BYTES")
    np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-5)


def test_an_old_style_model_still_gets_its_mean_and_std_applied_to_files(client: triton.InferenceServerClient) -> None:
    """The same files and weights as above: the old model's graph does not normalise, the server does it for it,
    so both models answer alike; without the config's mean/std the answer would differ."""
    rng = np.random.default_rng(1)
    files = [png(rng.integers(0, 256, (8, 8), dtype=np.uint8)) for _ in range(3)]
    pixels = np.stack([grey_4x4(f) for f in files])
    answer = infer(client, "classifier", np.array(files, dtype=object), "BYTES")
    np.testing.assert_allclose(answer, onnx_models.classifier_reference((pixels - 0.5) / 0.25), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(answer, infer(client, "pixels", np.array(files, dtype=object), "BYTES"), atol=1e-5)
    assert not np.allclose(answer, onnx_models.classifier_reference(pixels), atol=1e-2)


def generated(client: triton.InferenceServerClient, model: str, latent: np.ndarray, **params: str) -> np.ndarray:
    inputs = [triton.InferInput("latent", list(latent.shape), "FP32")]
    inputs[0].set_data_from_numpy(latent)
    if model == "cgen":
        inputs.append(triton.InferInput("class", [len(latent)], "INT64"))
        inputs[1].set_data_from_numpy(np.zeros(len(latent), np.int64))
    produced: np.ndarray = client.infer(model, inputs, parameters=params or None).as_numpy("images")
    return produced


def test_png_output_follows_each_generators_declared_range(client: triton.InferenceServerClient) -> None:
    latent = np.random.default_rng(2).standard_normal((3, onnx_models.LATENT)).astype(np.float32) * 2
    for model, to_pixels in (("pixelgen", lambda g: g), ("cgen", lambda g: (g + 1) / 2)):
        floats = generated(client, model, latent)
        files = generated(client, model, latent, output_format="png")
        decoded = np.stack([np.asarray(Image.open(io.BytesIO(f))) for f in files])  # [n, 2, 4]
        np.testing.assert_array_equal(decoded, np.round(to_pixels(floats[:, 0]) * 255).astype(np.uint8))
    pixel_floats = generated(client, "pixelgen", latent)
    assert pixel_floats.min() >= 0.0 and pixel_floats.max() <= 1.0 and pixel_floats.min() < 0.1
