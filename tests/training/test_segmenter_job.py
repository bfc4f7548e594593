"""The segmenter job end to end (dry runs): digits and a user's mask folder publish a contract-shaped model; a
folder's mistakes are one clear DatasetError; a card below the user's floor is refused, not published."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from cnnserve.contracts import segmentation
from cnnserve.training.cli import main
from cnnserve.training.data import DatasetError
from cnnserve.training.publish import versions
from cnnserve.training.report import BelowFloor
from cnnserve.training.segmenter.job import SEGMENTER_MAX_PIXELS, run_segmenter
from cnnserve.training.segmenter.kind import SegmenterOptions
from cnnserve.training.segmenter.mask_folder import load_mask_folder


def write_mask_folder(
    root: Path, sizes: tuple[tuple[int, int], ...] = ((20, 28), (24, 24), (16, 30), (20, 20))
) -> Path:
    """root/images/*.png, root/masks/*.png, root/classes.txt: bright squares (class 1) and dim bars (class 2)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("background\nsquare\nbar\n")
    for k, (h, w) in enumerate(sizes):
        image = np.zeros((h, w), np.uint8)
        mask = np.zeros((h, w), np.uint8)
        image[2:8, 2:8], mask[2:8, 2:8] = 250, 1
        image[2:8, w - 8 : w - 2], mask[2:8, w - 8 : w - 2] = 250, 1  # a second square: a second box
        image[h - 5 : h - 2, 3:12], mask[h - 5 : h - 2, 3:12] = 120, 2
        Image.fromarray(image).save(root / "images" / f"{k}.png")
        Image.fromarray(mask).save(root / "masks" / f"{k}.png")
    return root


def test_mask_folder_pads_to_the_stride_and_boxes_each_component(tmp_path: Path) -> None:
    folder = load_mask_folder(write_mask_folder(tmp_path / "shapes"), stride=8)
    assert folder.classes == ("background", "square", "bar")
    assert folder.scenes.images.shape == (4, 1, 24, 32)  # 24 x 30 at most, padded up to multiples of 8
    boxes, classes = folder.scenes.boxes_of(0)  # 20 x 28
    assert sorted(map(tuple, boxes.long().tolist())) == [(2, 2, 8, 8), (3, 15, 12, 18), (20, 2, 26, 8)]
    assert sorted(classes.tolist()) == [1, 1, 2]


@pytest.mark.parametrize("breakage", ["no_masks", "unmatched", "sizes", "index", "no_classes"])
def test_mask_folder_mistakes_are_dataset_errors(tmp_path: Path, breakage: str) -> None:
    root = write_mask_folder(tmp_path / "broken")
    if breakage == "no_masks":
        for p in (root / "masks").iterdir():
            p.unlink()
        (root / "masks").rmdir()
    elif breakage == "unmatched":
        (root / "masks" / "0.png").rename(root / "masks" / "zero.png")
    elif breakage == "sizes":
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "masks" / "1.png")
    elif breakage == "index":
        Image.fromarray(np.full((24, 24), 7, np.uint8)).save(root / "masks" / "1.png")
    else:
        (root / "classes.txt").write_text("background\n")
    with pytest.raises(DatasetError):
        load_mask_folder(root, stride=8)


def test_folder_trains_with_dry_run_and_publishes_the_contract(tmp_path: Path) -> None:
    root = write_mask_folder(tmp_path / "shapes")
    args = ["segmenter", "--dataset", str(root), "--dry-run", "--model-repository", str(tmp_path / "repo"),
            "--out-dir", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 0
    model_dir = tmp_path / "repo" / "shapes_segmenter"
    config = json.loads((model_dir / "config.json").read_text())
    assert [o["name"] for o in config["outputs"]] == list(segmentation.OUTPUTS)
    assert config["postprocessing"] == segmentation.postprocessing()
    assert config["parameters"]["task"] == segmentation.TASK and config["parameters"]["stride"] == "8"
    assert (model_dir / "labels.txt").read_text().split() == ["background", "square", "bar"]
    assert (tmp_path / "run" / "test_scenes.png").exists() and (tmp_path / "run" / "curves.png").exists()
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    boxes, _, _, mask, logits = session.run(None, {"images": np.zeros((2, 1, 16, 40), np.float32)})
    assert mask.shape == (2, 16, 40) and logits.shape == (2, 3, 16, 40) and boxes.shape == (2, 8, 4)


def test_below_the_floor_is_refused_and_nothing_published(tmp_path: Path) -> None:
    root = write_mask_folder(tmp_path / "shapes")
    options = SegmenterOptions(dataset=str(root), repository=tmp_path / "repo", out_dir=tmp_path / "run", epochs=1,
                               min_miou=0.999, extra={"steps_per_epoch": 1})  # fmt: skip
    with pytest.raises(BelowFloor):
        run_segmenter(options)
    assert not versions(tmp_path / "repo" / "shapes_segmenter")
    assert json.loads((tmp_path / "run" / "report.json").read_text())["passed"] is False
    untrained = ["--epochs", "1", "--batch-size", "1", "--lr", "1e-9"]  # one epoch at lr 1e-9 learns nothing
    args = ["segmenter", "--dataset", str(root), *untrained, "--min-miou", "0.5", "--model-repository",
            str(tmp_path / "repo"), "--out-dir", str(tmp_path / "cli-run")]  # fmt: skip
    assert main(args) == 1  # refused: one line on stderr, exit 1
    assert not versions(tmp_path / "repo" / "shapes_segmenter")


def test_digits_dry_run_publishes_digits_segmenter(tmp_path: Path) -> None:
    torch.manual_seed(0)
    result = run_segmenter(SegmenterOptions(repository=tmp_path / "repo", out_dir=tmp_path / "run", dry_run=True))
    assert result.name == "digits_segmenter" and result.report["passed"] is False  # a dry run publishes anyway
    labels = (tmp_path / "repo" / "digits_segmenter" / "labels.txt").read_text().split()
    assert labels == ["background", *"0123456789"]
    config = json.loads((tmp_path / "repo" / "digits_segmenter" / "config.json").read_text())
    assert config["preprocessing"]["max_pixels"] == SEGMENTER_MAX_PIXELS  # the server's cap for this model's files
    metrics = result.report["metrics"]
    assert {"miou", "found", "false_box_rate"} <= set(metrics["test"]) and "other_recipe" in metrics
