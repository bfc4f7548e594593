"""`cnnserve quantize` end to end: calibration off the validation side, the gates refusing with one line and
publishing nothing, the published variant's config, a real server answering the same top-1 from MODEL_int8 as from
MODEL, FP16 refused on a server without CUDA, and a classifier brought from elsewhere (no recipe, no features)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from cnnserve.cli import main as cnnserve_main
from cnnserve.contracts import features, variants
from cnnserve.training.cli import main as train_main
from cnnserve.training.data import load_dataset
from cnnserve.training.defaults import publish_default_variants
from cnnserve.training.image_sources import class_folders
from cnnserve.training.publish import versions
from cnnserve.training.variants.calibration import gate_images
from cnnserve.training.variants.gate import scores_only
from cnnserve.training.variants.quantize import quantize_int8
from cnnserve.training.variants.source import read_source

FAST = ["--speed-duration-s", "0.05", "--batch-size", "4"]  # the speed gate still measures both, briefly


def quantize(repo: Path, model: str, source: str | Path, *flags: str) -> int:
    return cnnserve_main(["quantize", "--model-repository", str(repo), model, "--calibration", str(source),
                          *FAST, *flags])  # fmt: skip


@pytest.fixture
def digits_repo(classifier_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the session's dry-run digits_cnn, so published variants stay in this test."""
    shutil.copytree(classifier_repo / "digits_cnn", tmp_path / "digits_cnn")
    return tmp_path


def config_of(repo: Path, name: str) -> dict[str, Any]:
    return json.loads((repo / name / "config.json").read_text())  # type: ignore[no-any-return]


def test_digits_calibrate_on_training_side_and_gate_on_the_validation_images(classifier_repo: Path) -> None:
    images = gate_images("digits", read_source(classifier_repo, "digits_cnn"))
    split = load_dataset("digits")  # the classifier job's own split
    assert set(images.calibration_index) <= set(split.train_index)
    assert not set(images.calibration_index) & set(images.held_out_index)
    assert list(images.held_out_index) == list(split.val_index)
    np.testing.assert_array_equal(images.held_out, split.val.images.numpy())
    assert images.held_out_labels is not None
    np.testing.assert_array_equal(images.held_out_labels, split.val.labels.numpy())
    assert len(np.unique(split.train.labels.numpy()[np.searchsorted(split.train_index, images.calibration_index)])) \
        == 10  # fmt: skip  # a sample of every class, not the first few hundred


def test_quantize_publishes_a_sibling_that_a_server_answers_like_its_source(digits_repo: Path, start_server,
                                                                             capsys) -> None:  # fmt: skip
    assert quantize(digits_repo, "digits_cnn", "digits", "--min-speedup", "0") == 0
    out = capsys.readouterr().out
    assert "accuracy gate: digits_cnn" in out and "speed gate: digits_cnn" in out
    source, variant = config_of(digits_repo, "digits_cnn"), config_of(digits_repo, "digits_cnn_int8")
    for key in ("inputs", "outputs", "preprocessing", "label_output", "max_batch_size", "session"):
        assert variant[key] == source[key]
    assert (digits_repo / "digits_cnn_int8" / "labels.txt").read_text() == \
        (digits_repo / "digits_cnn" / "labels.txt").read_text()  # fmt: skip
    parameters = variant["parameters"]
    assert variants.parse_quantized_from(parameters[variants.QUANTIZED_FROM]) == ("digits_cnn", 1)
    assert parameters[variants.HELD_OUT_ITEMS] == str(len(load_dataset("digits").val))
    for key in (variants.ACCURACY_SOURCE, variants.ACCURACY_VARIANT, variants.TOP1_AGREEMENT,
                variants.ITEMS_PER_S_SOURCE, variants.ITEMS_PER_S_VARIANT):  # fmt: skip
        assert float(parameters[key]) > 0
    assert parameters[variants.SPEED_BATCH_SIZE] == "4"
    assert features.ATLAS_PARAMETER not in parameters  # the atlas shows the source's neurons
    graph = onnx.load(str(digits_repo / "digits_cnn_int8" / "1" / "model.onnx")).graph
    assert "QuantizeLinear" in {node.op_type for node in graph.node}

    server = start_server(digits_repo)
    client = triton.InferenceServerClient(server.grpc_address)
    config = client.get_model_config("digits_cnn_int8").config
    assert config.parameters[variants.QUANTIZED_FROM].string_value == "digits_cnn:1"
    held_out = load_dataset("digits").val.images.numpy()
    answers = {}
    for name in ("digits_cnn", "digits_cnn_int8"):
        top1 = []
        for start in range(0, len(held_out), 100):  # max_batch_size is 128
            images = triton.InferInput("images", list(held_out[start : start + 100].shape), "FP32")
            images.set_data_from_numpy(held_out[start : start + 100])
            reply = client.infer(name, [images], outputs=[triton.InferRequestedOutput("logits")])
            top1.append(reply.as_numpy("logits").argmax(axis=1))
        answers[name] = np.concatenate(top1)
    assert np.mean(answers["digits_cnn"] == answers["digits_cnn_int8"]) >= 0.99


def test_a_refusing_gate_exits_1_with_one_line_and_publishes_nothing(digits_repo: Path, capsys) -> None:
    assert quantize(digits_repo, "digits_cnn", "digits", "--max-accuracy-drop", "-1", "--min-speedup", "1e6") == 1
    captured = capsys.readouterr()
    refusal = [line for line in captured.err.splitlines() if line.startswith("cnnserve quantize:")]
    assert len(refusal) == 1 and "accuracy gate" in refusal[0] and "limit -1" in refusal[0]
    assert "refused" in captured.out.split("speed gate:")[1]  # both verdicts printed either way
    assert versions(digits_repo / "digits_cnn_int8") == []


def test_fp16_is_published_for_cuda_only_and_a_cpu_server_refuses_it(digits_repo: Path, start_server,
                                                                     caplog) -> None:  # fmt: skip
    assert quantize(digits_repo, "digits_cnn", "digits", "--format", "fp16") == 0
    config = config_of(digits_repo, "digits_cnn_fp16")
    assert config["parameters"][variants.REQUIRES_PROVIDER] == "cuda"
    assert variants.ITEMS_PER_S_VARIANT not in config["parameters"]  # no speed is claimed from CPU runs
    graph = onnx.load(str(digits_repo / "digits_cnn_fp16" / "1" / "model.onnx")).graph
    assert {i.type.tensor_type.elem_type for i in [*graph.input, *graph.output]} == {TensorProto.FLOAT}
    assert TensorProto.FLOAT16 in {t.data_type for t in graph.initializer}
    for providers in (("cuda", "cpu"), ("cpu",)):  # no CUDA in this ONNX Runtime / not allowed by the server
        server = start_server(digits_repo, execution_providers=providers)
        client = triton.InferenceServerClient(server.grpc_address)
        index = {(m.name, m.version): m for m in client.get_model_repository_index().models}
        refused = index[("digits_cnn_fp16", "1")]
        assert refused.state == "UNAVAILABLE" and "CUDAExecutionProvider" in refused.reason
        assert client.is_model_ready("digits_cnn")
        assert not client.is_model_ready("digits_cnn_fp16")
    failures = [r.getMessage() for r in caplog.records if "event=model_load_failed" in r.getMessage()]
    assert len(failures) == 2 and all("requires_provider=cuda" in message for message in failures)


# A classifier from elsewhere: 3 x 20 x 12 input, no preprocessing in its config, no feature outputs.
def write_foreign_classifier(repo: Path, labels: list[str] | None) -> None:
    rng = np.random.default_rng(1)
    conv = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "conv_w")
    dense = numpy_helper.from_array(rng.standard_normal((8, len(labels or "abcd"))).astype(np.float32), "dense_w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["pixels", "conv_w"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "dense_w"], ["scores"]),
        ],
        "foreign", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 3, 20, 12])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", len(labels or "abcd")])], [conv, dense],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (repo / "foreign" / "1").mkdir(parents=True)
    onnx.save(model, str(repo / "foreign" / "1" / "model.onnx"))
    config: dict[str, Any] = {"max_batch_size": 8}
    if labels is not None:
        (repo / "foreign" / "labels.txt").write_text("\n".join(labels) + "\n")
        config["labels_file"] = "labels.txt"
    (repo / "foreign" / "config.json").write_text(json.dumps(config))


def write_flat_folder(root: Path, count: int = 50) -> Path:
    rng = np.random.default_rng(2)
    root.mkdir()
    for i in range(count):  # any size: the recipe (from the graph: RGB 20 x 12) resizes them
        Image.fromarray(rng.integers(0, 256, (17 + i % 5, 30, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def test_a_foreign_classifier_without_labels_is_gated_on_agreement(tmp_path: Path, capsys) -> None:
    write_foreign_classifier(tmp_path / "repo", labels=None)
    folder = write_flat_folder(tmp_path / "flat")
    assert quantize(tmp_path / "repo", "foreign", folder, "--min-agreement", "1.01") == 1
    assert "refused by the agreement gate" in capsys.readouterr().err
    assert quantize(tmp_path / "repo", "foreign", folder, "--min-speedup", "1e6") == 1
    assert "refused by the speed gate" in capsys.readouterr().err
    assert quantize(tmp_path / "repo", "foreign", folder, "--min-agreement", "0.5", "--min-speedup", "0") == 0
    parameters = config_of(tmp_path / "repo", "foreign_int8")["parameters"]
    assert float(parameters[variants.TOP1_AGREEMENT]) >= 0.5
    assert parameters[variants.HELD_OUT_ITEMS] == "10"  # a fifth of 50, the training split's share
    assert variants.ACCURACY_SOURCE not in parameters  # no labels: no accuracy is claimed


def test_a_class_folder_is_split_like_training_and_labelled_in_the_models_order(
    tmp_path: Path, image_folder: Path
) -> None:
    write_foreign_classifier(tmp_path, labels=["cross", "circle", "bar", "other"])
    images = gate_images(str(image_folder), read_source(tmp_path, "foreign"))
    split = load_dataset(str(image_folder), image_size=12)  # what `train classifier --dataset` would hold out
    assert list(images.held_out_index) == list(split.val_index)
    assert not set(images.calibration_index) & set(images.held_out_index)
    files = [name for name, paths in class_folders(image_folder) for _ in paths]
    assert images.held_out_labels is not None
    assert [("cross", "circle", "bar", "other")[label] for label in images.held_out_labels] == \
        [files[i] for i in images.held_out_index]  # fmt: skip
    assert images.held_out.shape[1:] == (3, 20, 12)


def test_folder_classes_that_are_not_the_models_labels_are_refused(tmp_path: Path, image_folder: Path,
                                                                   capsys) -> None:  # fmt: skip
    write_foreign_classifier(tmp_path, labels=["cat", "dog", "bird", "fish"])
    assert quantize(tmp_path, "foreign", image_folder) == 1
    assert "are not labels of model 'foreign'" in capsys.readouterr().err
    assert not (tmp_path / "foreign_int8").exists()


def test_user_errors_exit_1(digits_repo: Path, tmp_path: Path, capsys) -> None:
    assert quantize(digits_repo, "missing", "digits") == 1
    assert "no published version" in capsys.readouterr().err
    assert quantize(digits_repo, "digits_cnn", tmp_path / "nowhere") == 1
    assert "neither 'digits' nor a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_training_with_quantize_publishes_the_variant_too(tmp_path: Path, capsys) -> None:
    code = train_main(["classifier", "--dry-run", "--no-atlas", "--quantize", "fp16", "--model-repository",
                       str(tmp_path / "repo"), "--out-dir", str(tmp_path / "run")])  # fmt: skip
    assert code == 0
    assert "published digits_cnn_fp16" in capsys.readouterr().out
    parameters = config_of(tmp_path / "repo", "digits_cnn_fp16")["parameters"]
    assert parameters[variants.QUANTIZED_FROM] == "digits_cnn:1"
    assert parameters[variants.HELD_OUT_ITEMS] == str(len(load_dataset("digits").val))


def test_the_speed_gate_times_the_graph_the_server_runs_for_class_scores(classifier_repo: Path,
                                                                          tmp_path: Path) -> None:  # fmt: skip
    source = read_source(classifier_repo, "digits_cnn")
    images = gate_images("digits", source)
    int8 = onnx.load_from_string(quantize_int8(source.path.read_bytes(), "images", images.calibration[:32]))
    cut = scores_only(int8, "images", "logits")
    assert [o.name for o in cut.graph.output] == ["logits"]

    def optimised_ops(model: onnx.ModelProto, path: Path) -> set[str]:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(path)
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return {node.op_type for node in onnx.load(str(path)).graph.node}

    # Feature maps as graph outputs keep each conv in FP32 between DequantizeLinear and QuantizeLinear; cut to the
    # scores, ONNX Runtime fuses them into QLinearConv: that is the INT8 model the server runs for a classify.
    assert "QLinearConv" not in optimised_ops(int8, tmp_path / "full.onnx")
    assert "QLinearConv" in optimised_ops(cut, tmp_path / "cut.onnx")


def test_variant_names_and_sources_have_one_spelling() -> None:
    assert variants.variant_name("digits_cnn", "int8") == "digits_cnn_int8"
    value = variants.quantized_from_parameter("my:model", 12)
    assert variants.parse_quantized_from(value) == ("my:model", 12)
    for bad in ("digits_cnn", "digits_cnn:", ":3", "digits_cnn:x", "digits_cnn:\u0663"):
        with pytest.raises(ValueError):
            variants.parse_quantized_from(bad)
    with pytest.raises(ValueError):
        variants.variant_name("digits_cnn", "int4")


@pytest.mark.slow
def test_defaults_publish_the_int8_variant_only_when_its_gate_passes(digits_repo: Path, capsys) -> None:
    publish_default_variants(digits_repo)  # default limits and timing: the verdict is this machine's
    out = capsys.readouterr().out
    assert "accuracy gate: digits_cnn" in out and "speed gate: digits_cnn" in out
    published = versions(digits_repo / "digits_cnn_int8") == [1]
    assert published == ("digits_cnn_int8: published" in out)
    assert published != ("digits_cnn_int8: NOT published" in out)
