"""The style model's parts: the network's shapes and range at any stride multiple, the random loss net (fixed by its
seed, zero distance to itself), the report's measures (edge correlation 1 on itself, low on noise), the content
crops, the procedural style image; and the job's dry run through export and publish."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cnnserve.contracts import style
from cnnserve.training.cli import main
from cnnserve.training.style.data import ContentCrops
from cnnserve.training.style.job import STYLE_MAX_PIXELS
from cnnserve.training.style.losses import RandomFeatures, gram_distance, style_grams
from cnnserve.training.style.model import STRIDE, Stylizer, StylizerConfig
from cnnserve.training.style.painting import brushstrokes
from cnnserve.training.style.report import edge_correlation


@pytest.mark.parametrize("size", [(8, 8), (40, 56), (64, 24)])
def test_the_stylizer_keeps_any_stride_multiple_size_and_answers_pixels(size: tuple[int, int]) -> None:
    model = Stylizer(StylizerConfig()).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, *size) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert STRIDE == 8


def test_the_loss_net_is_fixed_by_its_seed_and_a_style_is_at_distance_zero_from_itself() -> None:
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a, b, other = RandomFeatures(5), RandomFeatures(5), RandomFeatures(6)
    assert all(torch.equal(x, y) for x, y in zip(a(image), b(image), strict=True))
    assert not torch.equal(a(image)[0], other(image)[0])
    assert float(gram_distance(a(image), style_grams(a, image))[0]) == pytest.approx(0.0, abs=1e-10)
    assert float(gram_distance(a(1 - image), style_grams(a, image))[0]) > 0.01


def test_edge_correlation_is_one_on_itself_and_near_zero_on_noise() -> None:
    rng = torch.Generator().manual_seed(1)
    photo = torch.rand(1, 3, 40, 40, generator=rng)
    assert edge_correlation(photo, photo) == pytest.approx(1.0)
    assert abs(edge_correlation(torch.rand(1, 3, 40, 40, generator=rng), photo)) < 0.1


def test_content_crops_are_seeded_squares_in_range() -> None:
    photos = [np.random.default_rng(k).integers(0, 256, (50 + k, 70, 3), dtype=np.uint8) for k in range(2)]
    crops = ContentCrops(photos, crop=16)
    first, again = crops.sample(5, torch.Generator().manual_seed(3)), crops.sample(5, torch.Generator().manual_seed(3))
    assert first.shape == (5, 3, 16, 16) and torch.equal(first, again)
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0


def test_the_painted_style_is_the_same_every_time() -> None:
    assert np.array_equal(np.asarray(brushstrokes(64)), np.asarray(brushstrokes(64)))
    assert np.asarray(brushstrokes(64)).std() > 20  # strokes, not a flat fill


def test_a_dry_run_exports_and_publishes_with_style_png(tmp_path: Path) -> None:
    repo, run = tmp_path / "repo", tmp_path / "run"
    assert main(["style", "--dry-run", "--model-repository", str(repo), "--out-dir", str(run), "--name", "s"]) == 0
    config = json.loads((repo / "s" / "config.json").read_text())
    assert config["parameters"] == style.parameters(STRIDE)
    assert config["preprocessing"] == style.preprocessing(STRIDE, STYLE_MAX_PIXELS)
    assert config["postprocessing"] == style.postprocessing()
    assert config["inputs"][0]["dims"] == [-1, 3, -1, -1] and config["outputs"][0]["dims"] == [-1, 3, -1, -1]
    assert (repo / "s" / "1" / style.STYLE_IMAGE_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "before_after.png").exists() and (run / "curves.png").exists()
    report = json.loads((run / "report.json").read_text())
    assert {c["name"] for c in report["checks"]} == {"held_out_style_ratio", "held_out_edge_correlation"}
    assert report["metrics"]["loss_net_seed"] != report["metrics"]["measure_net_seed"]
    session = ort.InferenceSession(str(repo / "s" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {style.INPUT: np.zeros((3, 3, 16, 24), np.float32)})[0].shape == (3, 3, 16, 24)


def test_a_missing_style_image_is_one_line_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["style", "--style", str(tmp_path / "none.png"), "--dry-run",
                 "--model-repository", str(tmp_path)]) == 1  # fmt: skip
    assert "no such image file" in capsys.readouterr().err
