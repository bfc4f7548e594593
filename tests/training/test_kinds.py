"""The training kinds' registry: the built-in kinds are the packages of training/ that hold a kind module; the CLI,
`defaults` and the default variants read them from it, without torch; a kind from outside training/ (tiny_kind.py)
registers as an installed plug-in (entry point) or by dotted path, and `cnnserve train tiny` trains it, exports it,
checks parity and publishes it where the real server serves it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from sklearn.datasets import load_digits

from cnnserve.cli import main as cnnserve_main
from cnnserve.training import kinds
from cnnserve.training.classifier.kind import ClassifierOptions
from cnnserve.training.cli import build_parser
from cnnserve.training.defaults import DEFAULT_MODELS, DEFAULT_VARIANTS
from cnnserve.training.kinds import KindError, TrainingKind
from cnnserve.training.options import RunOptions
from tests.training import tiny_kind

ROOT = Path(__file__).resolve().parents[2]


def test_the_built_in_kinds_are_the_packages_with_a_kind_module() -> None:
    assert list(kinds.built_in()) == ["classifier", "gan", "segmenter", "style"]
    assert DEFAULT_MODELS == ("digits_cnn", "dcgan_digits", "digits_segmenter", "cdcgan_digits", "stylize_brushstrokes")
    assert DEFAULT_VARIANTS == ("digits_cnn_int8",)


def test_the_cli_and_the_defaults_read_every_kind_without_torch() -> None:
    code = (
        "import sys; from cnnserve.training import cli, defaults; cli.build_parser().format_help(); "
        "assert defaults.DEFAULT_MODELS; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)


def test_options_come_from_the_flags_of_the_same_name() -> None:
    parsed = build_parser().parse_args(["classifier", "--model-repository", "r", "--seed", "3", "--no-atlas",
                                        "--epochs", "2"])  # fmt: skip
    assert kinds.built_in()["classifier"].options.from_args(parsed) == ClassifierOptions(
        repository=Path("r"), seed=3, atlas=False, epochs=2
    )


@pytest.mark.parametrize("name", ["defaults", "benchmark-models", "Tiny", "", "-x", "two words"])
def test_a_kind_needs_a_name_of_its_own(name: str) -> None:
    with pytest.raises(KindError):
        TrainingKind(name=name, help="", options=RunOptions, add_arguments=lambda p: None,
                     run=tiny_kind.KIND.run)  # type: ignore[arg-type]  # fmt: skip


def test_a_kind_path_that_does_not_import_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert cnnserve_main(["train", "--kind", "tests.training.no_such_module:KIND", "tiny"]) == 1
    assert "cannot import" in capsys.readouterr().err
    assert cnnserve_main(["train", "--kind", "tests.training.tiny_kind:NAME", "tiny"]) == 1
    assert "TrainingKind" in capsys.readouterr().err


def install_plugin(site: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """A distribution on the path declaring the kind in the entry point group cnnserve.training_kinds, as `pip
    install` of a package with `[project.entry-points."cnnserve.training_kinds"]` would leave it."""
    dist = site / "tiny_kind-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-kind\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{kinds.ENTRY_POINT_GROUP}]\ntiny = {value}\n")
    monkeypatch.syspath_prepend(str(site))


def test_a_plugin_that_cannot_be_imported_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, "tests.training.no_such_module:KIND")
    assert "tiny" not in kinds.installed() and list(kinds.built_in()) == list(kinds.installed())


def test_a_kind_from_outside_trains_publishes_and_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         start_server: Any) -> None:  # fmt: skip
    install_plugin(tmp_path / "site", monkeypatch, f"{tiny_kind.__name__}:KIND")
    assert kinds.installed()["tiny"] is tiny_kind.KIND
    repo, out = tmp_path / "repo", tmp_path / "run"
    args = ["--model-repository", str(repo), "--out-dir", str(out), "--steps", "30", "--seed", "1"]
    assert cnnserve_main(["train", "tiny", *args]) == 0

    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is True and report["metrics"]["steps"] == 30
    assert report["metrics"]["parity_max_abs_diff"] <= 1e-4  # ONNX Runtime answered what PyTorch did
    config = json.loads((repo / tiny_kind.NAME / "config.json").read_text())
    assert config["inputs"] == [{"name": "images", "datatype": "FP32", "dims": [-1, 1, 8, 8]}]
    assert config["parameters"] == {"task": "classification"}

    bunch = load_digits()
    pixels = (bunch.images[:32] / 16.0).astype(np.float32)[:, None]
    session = ort.InferenceSession(str(repo / tiny_kind.NAME / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"images": pixels})[0]
    running = start_server(repo)
    with triton.InferenceServerClient(running.grpc_address) as client:
        images = triton.InferInput("images", list(pixels.shape), "FP32")
        images.set_data_from_numpy(pixels)
        answer = client.infer(tiny_kind.NAME, [images])
    np.testing.assert_allclose(answer.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)
    assert float(np.mean(expected.argmax(1) == bunch.target[:32])) >= 0.8


def test_a_kind_named_by_dotted_path_trains_without_an_entry_point(tmp_path: Path) -> None:
    assert "tiny" not in kinds.installed()
    args = ["--model-repository", str(tmp_path / "repo"), "--out-dir", str(tmp_path / "run"), "--dry-run"]
    assert cnnserve_main(["train", "--kind", f"{tiny_kind.__name__}:KIND", "tiny", "--name", "dotted", *args]) == 0
    assert (tmp_path / "repo" / "dotted" / "1" / "model.onnx").is_file()
