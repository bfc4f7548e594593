"""Fixtures shared by the training tests: tiny image folders and one dry-run classifier published per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnserve.training.cli import main


def write_image_folder(root: Path) -> Path:
    """root/<class>/<image>: three classes, mixed sizes, modes (L, RGB, RGBA) and formats (PNG, JPEG)."""
    rng = np.random.default_rng(0)
    specs = [("L", (20, 20), "png"), ("RGB", (32, 24), "jpg"), ("RGBA", (12, 16), "png"), ("RGB", (9, 9), "jpeg")]
    for c, name in enumerate(["circle", "bar", "cross"]):
        for k, (mode, size, fmt) in enumerate(specs * 2):
            channels = len(mode) if mode != "L" else 1
            pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
            pixels[..., 0] = (pixels[..., 0] // 4 + 60 * c).astype(np.uint8)  # a class-dependent tint
            image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode)
            (root / name).mkdir(parents=True, exist_ok=True)
            image.save(root / name / f"{k}.{fmt}")
    (root / "bar" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def classifier_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding digits_cnn version 1, published by the CLI with --dry-run."""
    repo = tmp_path_factory.mktemp("repo")
    out = tmp_path_factory.mktemp("runs")
    code = main(["classifier", "--dry-run", "--model-repository", str(repo), "--out-dir", str(out / "cnn")])
    assert code == 0
    return repo
