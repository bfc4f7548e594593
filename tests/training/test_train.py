"""The training loops learn: a few steps lower the loss; GAN runs write their artefacts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from cnnserve.training.classifier.loop import ClassifierTrainConfig, train_classifier
from cnnserve.training.classifier.model import ClassifierConfig
from cnnserve.training.data import DataSplit, ImageSet, load_dataset
from cnnserve.training.gan.loop import GanTrainConfig, train_gan
from cnnserve.training.gan.model import GanConfig
from cnnserve.training.gan.sampling import generate


def _subset(split: DataSplit, n: int) -> DataSplit:
    return replace(split, train=ImageSet(split.train.images[:n], split.train.labels[:n]),
                   val=ImageSet(split.val.images[:100], split.val.labels[:100]))  # fmt: skip


def test_a_few_epochs_of_classifier_training_lower_the_loss(tmp_path: Path) -> None:
    torch.manual_seed(0)
    split = _subset(load_dataset("digits"), 256)
    config = ClassifierTrainConfig(epochs=4, batch_size=32, augment=False)
    run = train_classifier(split, ClassifierConfig(channels=(8, 16), hidden=32), config, tmp_path)
    losses = run.history["train_loss"]
    assert losses[-1] < 0.7 * losses[0]
    assert run.val_accuracy > 0.5  # from 10% by chance
    assert run.confusion.sum() == len(split.val)
    assert not run.model.training
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    checkpoints = sorted((tmp_path / "checkpoints").glob("epoch-*.pt"))
    assert [p.name for p in checkpoints] == ["epoch-002.pt", "epoch-003.pt", "epoch-004.pt"]  # newest 3 kept
    assert torch.load(checkpoints[-1])["epoch"] == 4


def test_gan_training_writes_grids_and_returns_an_eval_generator(tmp_path: Path) -> None:
    torch.manual_seed(0)
    split = _subset(load_dataset("digits"), 128)
    model_config = GanConfig(num_classes=10, g_width=16, d_width=16)
    run = train_gan(split, model_config, GanTrainConfig(epochs=2, batch_size=32), tmp_path)
    assert run.epochs == 2 and len(run.history["d_loss"]) == 2
    assert not run.generator.training
    images = generate(run.generator, torch.randn(5, 64), torch.arange(5))
    assert images.shape == (5, 1, 16, 16) and images.min() >= 0 and images.max() <= 1
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["epoch-001.png", "epoch-002.png"]
    assert (tmp_path / "samples_final.png").exists() and (tmp_path / "curves.png").exists()


def test_infogan_codes_packing_and_r1_train_with_the_bce_loss(tmp_path: Path) -> None:
    split = _subset(load_dataset("digits"), 64)
    config = GanTrainConfig(epochs=1, batch_size=31, loss="bce", beta1=0.5, r1_gamma=1.0)  # odd: packs trimmed
    model = GanConfig(codes=10, g_width=16, d_width=16, spectral_norm=False, minibatch_std=True, pack=2)
    run = train_gan(split, model, config, tmp_path)
    assert all(torch.isfinite(torch.tensor(v)).all() for v in run.history.values())
