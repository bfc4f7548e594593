"""The neuron atlas of a real (briefly trained) digits classifier: each channel's optimised image excites it more
than the other channels' images do, the index matches the sprites, the top crops are sorted and true."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from cnnserve.contracts.features import ATLAS_DIR, ATLAS_INDEX, ATLAS_PARAMETER, ATLAS_TOP_K, feature_name
from cnnserve.training.classifier.atlas import (
    AtlasConfig,
    PixelFeatures,
    build_atlas,
    channel_means,
    receptive_fields,
)
from cnnserve.training.classifier.loop import ClassifierRun, ClassifierTrainConfig, train_classifier
from cnnserve.training.classifier.model import Classifier, ClassifierConfig
from cnnserve.training.data import DataSplit, load_dataset

MIN_OWN_RANK = 0.9  # per layer: the mean share of other channels' images that excite a channel less than its own


@pytest.fixture(scope="module")
def split() -> DataSplit:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def run(split: DataSplit, tmp_path_factory: pytest.TempPathFactory) -> ClassifierRun:
    """The default architecture at half width after 2 epochs (~95% on validation; a few seconds)."""
    torch.manual_seed(0)
    config = ClassifierTrainConfig(epochs=2, augment=False, progress_bar=False)
    return train_classifier(split, ClassifierConfig(channels=(16, 32)), config, tmp_path_factory.mktemp("atlas-run"))


@pytest.fixture(scope="module")
def atlas(run: ClassifierRun, split: DataSplit) -> dict[str, bytes]:
    return build_atlas(run.model, run.mean, run.std, split.val, split.classes, "digits_cnn", AtlasConfig())


@pytest.fixture(scope="module")
def index(atlas: dict[str, bytes]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(atlas[f"{ATLAS_DIR}/{ATLAS_INDEX}"])
    return document


def sprite(atlas: dict[str, bytes], name: str) -> np.ndarray:
    image = Image.open(io.BytesIO(atlas[f"{ATLAS_DIR}/{name}"]))
    assert image.mode == "L"
    return np.asarray(image)


def tiles(atlas: dict[str, bytes], part: dict[str, Any], count: int, size: int) -> torch.Tensor:
    """[count, 1, size, size] in [0, 1]: the sprite's tiles back at their own pixels (every scale-th pixel)."""
    grid = sprite(atlas, part["sprite"])
    (height, width), columns = part["tile"], part["columns"]
    scale = height // size
    cut = [grid[r * height : (r + 1) * height : scale, c * width : (c + 1) * width : scale]
           for r, c in (divmod(k, columns) for k in range(count))]  # fmt: skip
    return torch.tensor(np.stack(cut)[:, None] / 255.0, dtype=torch.float32)


def own_rank(activations: torch.Tensor) -> torch.Tensor:
    """Per channel c (row): the share of the other channels' images that excite c less than c's own (ties 1/2)."""
    own = activations.diagonal()[:, None]
    others = ~torch.eye(len(activations), dtype=torch.bool)
    beaten = (activations < own).float() + 0.5 * (activations == own).float()
    return (beaten * others).sum(dim=1) / (len(activations) - 1)


def test_each_channels_optimised_image_excites_it_more_than_the_others_do(
    run: ClassifierRun, atlas: dict[str, bytes], index: dict[str, Any]
) -> None:
    features = PixelFeatures(run.model, run.mean, run.std)
    for layer in index["layers"]:
        images = tiles(atlas, layer["optimised"], layer["channels"], index["image_size"][0])
        activations = channel_means(features, layer["layer"], images)  # [channel, image], as the PNG stores them
        own = activations.diagonal()
        others = activations[~torch.eye(len(activations), dtype=torch.bool)]
        assert own.mean() > 1.5 * others.mean(), layer["layer"]
        assert own_rank(activations).mean() >= MIN_OWN_RANK, layer["layer"]
        # The statistic can fail: the same images given to the wrong channels rank near chance.
        shuffled = activations[:, torch.roll(torch.arange(len(activations)), 1)]
        assert own_rank(shuffled).mean() < MIN_OWN_RANK, layer["layer"]
        recorded = torch.tensor([n["optimised_activation"] for n in layer["neurons"]])
        torch.testing.assert_close(recorded, own, atol=1e-4, rtol=1e-4)


def test_the_index_matches_the_sprites(run: ClassifierRun, atlas: dict[str, bytes], index: dict[str, Any]) -> None:
    assert index["model"] == "digits_cnn" and index["image_size"] == [16, 16] and index["top_k"] == ATLAS_TOP_K
    assert [layer["layer"] for layer in index["layers"]] == [feature_name(1, "relu"), feature_name(2, "relu")]
    assert [layer["channels"] for layer in index["layers"]] == list(run.model.config.channels)
    assert [layer["receptive_field"] for layer in index["layers"]] == [3, 8]
    assert set(atlas) == {f"{ATLAS_DIR}/{ATLAS_INDEX}"} | {
        f"{ATLAS_DIR}/{layer[part]['sprite']}" for layer in index["layers"] for part in ("optimised", "top")
    }
    for layer in index["layers"]:
        channels, field = layer["channels"], layer["receptive_field"]
        assert [n["channel"] for n in layer["neurons"]] == list(range(channels))
        for part, count, size in (("optimised", channels, 16), ("top", channels * ATLAS_TOP_K, field)):
            (height, width), columns = layer[part]["tile"], layer[part]["columns"]
            assert height == width and height % size == 0 and height >= 48  # upscaled to be seen
            rows = -(-count // columns)
            assert sprite(atlas, layer[part]["sprite"]).shape == (rows * height, columns * width)
        assert layer["top"]["columns"] == ATLAS_TOP_K  # a row per channel
        assert all(len(n["top"]) == ATLAS_TOP_K for n in layer["neurons"])


def test_top_crops_are_sorted_and_give_their_activations(
    run: ClassifierRun, split: DataSplit, atlas: dict[str, bytes], index: dict[str, Any]
) -> None:
    features = PixelFeatures(run.model, run.mean, run.std)
    fields = receptive_fields(run.model)
    for layer, field in zip(index["layers"], fields, strict=True):
        with torch.no_grad():
            maps = features(split.val.images)[layer["layer"]]  # [N, C, H', W']
        crops = tiles(atlas, layer["top"], layer["channels"] * ATLAS_TOP_K, field.size)
        for neuron in layer["neurons"]:
            c, top = neuron["channel"], neuron["top"]
            values = [t["activation"] for t in top]
            assert values == sorted(values, reverse=True)
            assert len({t["image"] for t in top}) == len(top)  # each image once
            assert values[0] == pytest.approx(float(maps[:, c].max()), abs=1e-5)  # nothing in the split beats it
            for k, t in enumerate(top):
                x0, y0, x1, y1 = t["box"]
                assert x1 - x0 == y1 - y0 == field.size
                y, x = (round((edge + (field.size - 1) / 2 - field.start) / field.jump) for edge in (y0, x0))
                assert field.box(y, x) == t["box"]
                assert float(maps[t["image"], c, y, x]) == pytest.approx(t["activation"], abs=1e-5)
                assert t["label"] == split.classes[int(split.val.labels[t["image"]])]
                source = torch.nn.functional.pad(split.val.images[t["image"]], (8, 8, 8, 8))
                expected = torch.round(source[:, y0 + 8 : y1 + 8, x0 + 8 : x1 + 8] * 255) / 255
                torch.testing.assert_close(crops[c * ATLAS_TOP_K + k], expected, atol=1e-6, rtol=0)


def test_receptive_fields_follow_the_kernels_and_pools() -> None:
    model = Classifier(ClassifierConfig(image_size=32, channels=(4, 4, 4), kernel_sizes=(5, 3, 3)))
    fields = receptive_fields(model)
    assert [(f.size, f.jump) for f in fields] == [(5, 1), (10, 2), (20, 4)]
    assert fields[0].box(0, 0) == [-2, -2, 3, 3]  # centred on pixel 0
    assert fields[1].box(0, 0) == [-4, -4, 6, 6]  # centred between pixels 0 and 1 (after a 2 x 2 pool)
    assert fields[1].box(2, 1) == [-2, 0, 8, 10]


def test_the_atlas_is_deterministic(run: ClassifierRun, split: DataSplit) -> None:
    config = AtlasConfig(steps=4)
    weights = {k: v.clone() for k, v in run.model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in run.model.parameters()]
    first = build_atlas(run.model, run.mean, run.std, split.val, split.classes, "m", config)
    assert build_atlas(run.model, run.mean, run.std, split.val, split.classes, "m", config) == first
    assert (
        build_atlas(run.model, run.mean, run.std, split.val, split.classes, "m", AtlasConfig(steps=4, seed=1)) != first
    )
    for key, value in run.model.state_dict().items():  # the model is only read: weights, statistics, gradients
        assert torch.equal(value, weights[key]), key
    for p, before in zip(run.model.parameters(), grads, strict=True):
        if before is None:
            assert p.grad is None
        else:
            assert p.grad is not None and torch.equal(p.grad, before)


def test_a_published_classifier_carries_its_atlas(classifier_repo: Path) -> None:
    """The session's dry-run digits_cnn: the config names the index, and every sprite it names is there."""
    config = json.loads((classifier_repo / "digits_cnn" / "config.json").read_text())
    assert config["parameters"][ATLAS_PARAMETER] == f"{ATLAS_DIR}/{ATLAS_INDEX}"
    version = classifier_repo / "digits_cnn" / "1"
    document = json.loads((version / config["parameters"][ATLAS_PARAMETER]).read_text())
    for layer in document["layers"]:
        for part in ("optimised", "top"):
            assert (version / ATLAS_DIR / layer[part]["sprite"]).is_file()
