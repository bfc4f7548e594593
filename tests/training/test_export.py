"""ONNX export: dynamic batch, checker, metadata, and the parity check that refuses a mismatching model."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from cnnserve.training.classifier.data import normalise
from cnnserve.training.classifier.model import Classifier, ClassifierConfig, PixelClassifier
from cnnserve.training.export import ExportSpec, ParityError, build_metadata, export_model
from cnnserve.training.gan.model import GanConfig, Generator, PixelGenerator


def _images(n: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    return (torch.randn(n, 1, 16, 16, generator=g),)


def _session(model_bytes: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])


def test_classifier_export_passes_parity_and_batches_dynamically() -> None:
    torch.manual_seed(0)
    model = Classifier(ClassifierConfig())
    model.train()(torch.randn(32, 1, 16, 16))  # batch-norm statistics that are not the defaults
    real = torch.rand(7, 1, 16, 16)
    spec = ExportSpec("digits_cnn", ("images",), ("logits",), _images, (real,))
    metadata = build_metadata(["a", "b"], {"mean": [0.5]}, {"passed": True}, {"extra": {"k": 1}})
    result = export_model(model, spec, metadata)
    assert result.max_difference <= 1e-4
    assert result.inputs == [{"name": "images", "datatype": "FP32", "dims": [-1, 1, 16, 16]}]
    assert result.outputs == [{"name": "logits", "datatype": "FP32", "dims": [-1, 10]}]
    assert any(o.version >= 17 for o in result.model.opset_import if o.domain in ("", "ai.onnx"))
    session = _session(result.model.SerializeToString())
    assert session.get_inputs()[0].shape == ["batch", 1, 16, 16]
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    np.testing.assert_allclose(session.run(None, {"images": x.numpy()})[0], expected, atol=1e-4)
    props = session.get_modelmeta().custom_metadata_map
    assert json.loads(props["labels"]) == ["a", "b"]
    assert json.loads(props["preprocessing"]) == {"mean": [0.5]}
    assert json.loads(props["report"]) == {"passed": True}
    assert props["source_commit"]
    assert json.loads(props["extra"]) == {"k": 1}
    assert props["exporter"] == "torchscript"


def test_conditional_generator_export_takes_latent_and_int64_class_with_the_dynamo_exporter() -> None:
    generator = Generator(GanConfig(num_classes=10))

    def sample(n: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        return torch.randn(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)

    real = (torch.randn(7, 64), torch.arange(7))
    spec = ExportSpec("cdcgan", ("latent", "class"), ("images",), sample, real, exporter="dynamo")
    result = export_model(generator, spec, {})
    assert {p.key: p.value for p in result.model.metadata_props}["exporter"] == "dynamo"
    assert [i["datatype"] for i in result.inputs] == ["FP32", "INT64"]
    assert result.outputs == [{"name": "images", "datatype": "FP32", "dims": [-1, 1, 16, 16]}]
    session = _session(result.model.SerializeToString())
    assert session.get_inputs()[1].shape == ["batch"]
    out = session.run(None, {"latent": np.zeros((2, 64), np.float32), "class": np.array([1, 2], np.int64)})[0]
    assert out.shape == (2, 1, 16, 16)


def _pixels(n: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    return (torch.rand(n, 1, 16, 16, generator=g),)


def test_a_pixel_classifier_normalises_in_its_graph_and_parity_covers_the_wrapper() -> None:
    torch.manual_seed(0)
    classifier = Classifier(ClassifierConfig())
    classifier.train()(torch.randn(32, 1, 16, 16))
    mean, std = [0.3], [0.4]
    spec = ExportSpec("digits_cnn", ("images",), ("logits",), _pixels, (torch.rand(7, 1, 16, 16),))
    result = export_model(PixelClassifier(classifier, mean, std), spec, {})
    assert result.max_difference <= 1e-4
    assert {node.op_type for node in result.model.graph.node} >= {"Sub", "Div"}
    pixels = torch.rand(5, 1, 16, 16)
    with torch.no_grad():
        expected = classifier.eval()(normalise(pixels, mean, std)).numpy()
    got = _session(result.model.SerializeToString()).run(None, {"images": pixels.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


class NormalisesWrongly(PixelClassifier):
    """Eager PyTorch normalises; the exported graph, traced on another branch, does not: parity must see it."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if torch.onnx.is_in_onnx_export():
            out: torch.Tensor = self.classifier(pixels)
            return out
        return super().forward(pixels)


def test_parity_is_checked_on_the_wrapped_model_with_pixel_inputs() -> None:
    torch.manual_seed(0)
    spec = ExportSpec("digits_cnn", ("images",), ("logits",), _pixels, (torch.rand(7, 1, 16, 16),))
    with pytest.raises(ParityError):
        export_model(NormalisesWrongly(Classifier(ClassifierConfig()), [0.3], [0.4]), spec, {})


@pytest.mark.parametrize("num_classes", [0, 10])
def test_an_exported_generator_answers_pixels_in_0_1(num_classes: int) -> None:
    torch.manual_seed(0)
    generator = Generator(GanConfig(num_classes=num_classes))
    with torch.no_grad():  # larger weights drive the final tanh to both ends, so the whole range is seen
        for parameter in generator.parameters():
            parameter.mul_(4)

    def sample(n: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        z = torch.randn(n, 64, generator=g)
        return (z,) if not num_classes else (z, torch.randint(0, num_classes, (n,), generator=g))

    names = ("latent", "class") if num_classes else ("latent",)
    spec = ExportSpec("gan", names, ("images",), sample, sample(7, torch.Generator().manual_seed(9)))
    result = export_model(PixelGenerator(generator), spec, {})
    feeds = {name: t.numpy() for name, t in zip(names, sample(64, torch.Generator().manual_seed(3)), strict=True)}
    images = _session(result.model.SerializeToString()).run(None, feeds)[0]
    assert images.shape == (64, 1, 16, 16)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.min() < 0.05 and images.max() > 0.95  # the whole [0, 1] range, not [0.5, 1] or a squeeze
    with torch.no_grad():
        raw = generator.eval()(*(torch.from_numpy(feeds[n]) for n in names)).numpy()
    # weights x4 through four conv layers amplify float rounding: 1e-4 is the exporter's own bound at normal scale
    np.testing.assert_allclose(images, (raw + 1) / 2, atol=3e-4)


class CountsItsCalls(nn.Module):
    """Eager output changes with every call; the exported graph freezes the count seen while exporting."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out: torch.Tensor = self.linear(x) * self.calls
        return out


def test_export_is_refused_when_onnx_runtime_disagrees_with_pytorch() -> None:
    def sample(n: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        return (torch.randn(n, 4, generator=g),)

    spec = ExportSpec("drifting", ("x",), ("y",), sample, (torch.randn(7, 4),))
    with pytest.raises(ParityError) as caught:
        export_model(CountsItsCalls(), spec, {})
    err = caught.value
    assert err.model == "drifting"
    assert err.batch_size == 1
    assert err.difference > err.tolerance == 1e-4
    assert "drifting" in str(err) and "batch size 1" in str(err)


def test_a_tighter_tolerance_than_float_noise_is_refused() -> None:
    """The check compares real numbers: a zero tolerance fails on float32 rounding alone."""
    torch.manual_seed(0)
    spec = ExportSpec("strict", ("images",), ("logits",), _images, (torch.rand(7, 1, 16, 16),), tolerance=0.0)
    with pytest.raises(ParityError):
        export_model(Classifier(ClassifierConfig()), spec, {})
