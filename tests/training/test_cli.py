"""`cnnserve train ...` end to end with --dry-run: loadable ONNX models and configs in a temporary repository."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from cnnserve.cli import main as cnnserve_main
from cnnserve.training.cli import main
from cnnserve.training.defaults import DEFAULT_MODELS, ensure_default_models
from cnnserve.training.gan.job import run_gan
from cnnserve.training.gan.kind import GanOptions
from cnnserve.training.publish import versions


def _load(repo: Path, name: str, version: int = 1) -> tuple[dict, ort.InferenceSession]:  # type: ignore[type-arg]
    config = json.loads((repo / name / "config.json").read_text())
    session = ort.InferenceSession(str(repo / name / str(version) / "model.onnx"), providers=["CPUExecutionProvider"])
    return config, session


@pytest.fixture(scope="module")
def gan_repo(classifier_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's classifier plus both GANs, published by the CLI with --dry-run (the classifier judges)."""
    repo = tmp_path_factory.mktemp("gans")
    shutil.copytree(classifier_repo / "digits_cnn", repo / "digits_cnn")
    out = tmp_path_factory.mktemp("gan_runs")
    assert main(["gan", "--dry-run", "--model-repository", str(repo), "--out-dir", str(out / "g")]) == 0
    args = ["gan", "--conditional", "--dry-run", "--model-repository", str(repo), "--out-dir", str(out / "c")]
    assert main([*args, "--judge", str(repo / "digits_cnn")]) == 0
    return repo


def test_classifier_entry_matches_the_server_format(classifier_repo: Path) -> None:
    config, session = _load(classifier_repo, "digits_cnn")
    assert config["name"] == "digits_cnn" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 128
    assert config["inputs"] == [{"name": "images", "datatype": "FP32", "dims": [-1, 1, 16, 16]}]
    features = [("features.block1.relu", [-1, 32, 16, 16]), ("features.block1.pool", [-1, 32, 8, 8]),
                ("features.block2.relu", [-1, 64, 8, 8]), ("features.block2.pool", [-1, 64, 4, 4])]  # fmt: skip
    assert config["outputs"] == [{"name": "logits", "datatype": "FP32", "dims": [-1, 10]},
                                 *({"name": n, "datatype": "FP32", "dims": d} for n, d in features)]  # fmt: skip
    assert config["labels_file"] == "labels.txt" and config["label_output"] == "logits"
    assert config["dynamic_batching"] == {
        "max_queue_delay_us": 500,
        "preferred_batch_sizes": [],
        "max_queue_size": 1024,
        "latency_budget_ms": 50,  # the server refuses at once what its queue would answer later
    }
    assert config["instance_count"] == 1
    pre = config["preprocessing"]
    assert (pre["input"], pre["height"], pre["width"], pre["channels"], pre["layout"]) == ("images", 16, 16, 1, "NCHW")
    assert pre["scale"] == pytest.approx(1 / 255) and "mean" not in pre and "std" not in pre  # in the graph
    normalisation = json.loads(session.get_modelmeta().custom_metadata_map["normalisation"])
    assert len(normalisation["mean"]) == len(normalisation["std"]) == 1 and 0 < normalisation["mean"][0] < 1
    names = ",".join(n for n, _ in features)
    assert config["parameters"] == {"task": "classification", "optional_outputs": names, "feature_outputs": names,
                                    "atlas": "atlas/index.json"}  # fmt: skip
    assert (classifier_repo / "digits_cnn" / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    logits = session.run(None, {"images": np.zeros((5, 1, 16, 16), np.float32)})[0]
    assert logits.shape == (5, 10)
    report = json.loads(session.get_modelmeta().custom_metadata_map["report"])
    assert report["passed"] is False  # one dry-run batch cannot reach 99%; published anyway, marked
    assert report["metrics"]["svc_val_accuracy"] > 0.97


def test_gan_entries_match_the_server_format(gan_repo: Path) -> None:
    config, session = _load(gan_repo, "dcgan_digits")
    assert config["inputs"] == [{"name": "latent", "datatype": "FP32", "dims": [-1, 64]}]
    assert config["outputs"] == [{"name": "images", "datatype": "FP32", "dims": [-1, 1, 16, 16]}]
    assert config["postprocessing"] == {"output": "images", "range": [0.0, 1.0]}
    assert config["parameters"] == {"task": "generation", "latent_dim": "64", "default_truncation": "1.0"}
    assert "labels_file" not in config and not (gan_repo / "dcgan_digits" / "labels.txt").exists()
    images = session.run(None, {"latent": np.random.default_rng(0).standard_normal((3, 64), np.float32)})[0]
    assert images.shape == (3, 1, 16, 16) and images.min() >= 0 and images.max() <= 1

    config, session = _load(gan_repo, "cdcgan_digits")
    assert [i["name"] for i in config["inputs"]] == ["latent", "class"]
    assert config["inputs"][1] == {"name": "class", "datatype": "INT64", "dims": [-1]}
    assert config["parameters"] == {"task": "conditional_generation", "latent_dim": "64", "default_truncation": "0.8",
                                    "num_classes": "10"}  # fmt: skip
    assert config["labels_file"] == "labels.txt"
    feeds = {"latent": np.zeros((2, 64), np.float32), "class": np.array([0, 9], np.int64)}
    assert session.run(None, feeds)[0].shape == (2, 1, 16, 16)
    report = json.loads(session.get_modelmeta().custom_metadata_map["report"])
    assert [c["name"] for c in report["checks"]] == ["asked_class_confident_share", "min_class_diversity"]
    metrics = report["metrics"]
    assert len(metrics["class_fid"]) == len(metrics["class_diversity"]) == 10 and metrics["fid"] > metrics["real_fid"]
    assert metrics["selected_epoch"] == 1 and metrics["evaluations"][0]["epoch"] == 1
    assert metrics["truncation"] == 0.8  # the card is measured at the truncation the config serves by default


def test_a_gan_job_takes_model_preset_overrides(classifier_repo: Path, tmp_path: Path) -> None:
    """scripts/gan_ablation.py takes one remedy away at a time through them; the rest of the preset stays."""
    repo = tmp_path / "repo"
    shutil.copytree(classifier_repo / "digits_cnn", repo / "digits_cnn")
    options = GanOptions(repository=repo, name="ablated", out_dir=tmp_path / "run", conditional=True, dry_run=True,
                         progress_bar=False, model_extra={"minibatch_std": False, "g_width": 16})  # fmt: skip
    run_gan(options)
    _, session = _load(repo, "ablated")
    model_config = json.loads(session.get_modelmeta().custom_metadata_map["model_config"])
    assert model_config["minibatch_std"] is False and model_config["g_width"] == 16
    assert model_config["auxiliary_classifier"] is True  # the conditional preset's own, untouched


def test_unconditional_report_carries_fid_and_diversity(gan_repo: Path) -> None:
    _, session = _load(gan_repo, "dcgan_digits")
    report = json.loads(session.get_modelmeta().custom_metadata_map["report"])
    assert [c["name"] for c in report["checks"]] == ["confident_share", "min_class_share", "diversity"]
    assert {"fid", "class_fid", "diversity", "class_diversity", "real_fid", "selected_epoch"} <= set(report["metrics"])


def test_defaults_skip_present_models_and_train_missing_ones(gan_repo: Path, tmp_path: Path, monkeypatch) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(gan_repo, repo)
    shutil.rmtree(repo / "dcgan_digits")
    monkeypatch.chdir(tmp_path)  # artefacts go to ./runs
    assert cnnserve_main(["train", "defaults", "--dry-run", "--model-repository", str(repo)]) == 0
    assert {name: versions(repo / name) for name in DEFAULT_MODELS} == {name: [1] for name in DEFAULT_MODELS}
    assert (tmp_path / "runs" / "dcgan_digits" / "report.json").exists()
    assert not (tmp_path / "runs" / "digits_cnn").exists()  # skipped: already had a version


def test_image_folder_classifier_in_rgb(image_folder: Path, tmp_path: Path) -> None:
    args = ["classifier", "--dataset", str(image_folder), "--channels", "3", "--dry-run", "--name", "shapes",
            "--model-repository", str(tmp_path / "repo"), "--out-dir", str(tmp_path / "run"),
            "--seed", "3"]  # fmt: skip
    assert main(args) == 0
    config, _ = _load(tmp_path / "repo", "shapes")
    assert config["inputs"][0]["dims"] == [-1, 3, 16, 16] and config["preprocessing"]["channels"] == 3
    assert (tmp_path / "repo" / "shapes" / "labels.txt").read_text().split() == ["bar", "circle", "cross"]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["passed"] is None  # no thresholds for other datasets
    assert report["metrics"]["seed"] == 3


def test_user_errors_exit_1_with_one_line(tmp_path: Path, capsys) -> None:
    assert main(["classifier", "--dataset", str(tmp_path / "nowhere"), "--dry-run"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["gan", "--judge", str(tmp_path / "none.onnx"), "--model-repository", str(tmp_path)]) == 1


def test_defaults_can_train_both_gans_side_by_side(classifier_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(classifier_repo / "digits_cnn", repo / "digits_cnn")
    ensure_default_models(repo, dry_run=True, runs_dir=tmp_path / "runs", parallel=True)
    assert {name: versions(repo / name) for name in DEFAULT_MODELS} == {name: [1] for name in DEFAULT_MODELS}
    assert (tmp_path / "runs" / "cdcgan_digits" / "report.json").exists()


def test_benchmark_models_publishes_heavy_cnn(tmp_path: Path, capsys) -> None:
    assert main(["benchmark-models", "--model-repository", str(tmp_path)]) == 0
    assert "GFLOP" in capsys.readouterr().out
    config, session = _load(tmp_path, "heavy_cnn")
    assert config["inputs"] == [{"name": "images", "datatype": "FP32", "dims": [-1, 3, 64, 64]}]
    assert session.run(None, {"images": np.zeros((2, 3, 64, 64), np.float32)})[0].shape == (2, 10)
