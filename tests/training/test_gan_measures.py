"""The GAN measures on known inputs (training/gan/measures.py), the evaluation with a real judge
(training/gan/evaluation.py) and checkpoint selection in the training loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cnnserve.training.data import DataSplit, ImageSet, load_dataset
from cnnserve.training.gan.evaluation import Evaluation, GanEvaluator, Sampler
from cnnserve.training.gan.judge import Judge
from cnnserve.training.gan.loop import GanTrainConfig, train_gan
from cnnserve.training.gan.measures import (
    Quality,
    RealReference,
    diversity_ratio,
    frechet_distance,
    mean_pairwise_distance,
    measure,
    to_native,
)
from cnnserve.training.gan.model import GanConfig, Generator
from cnnserve.training.report import check


def test_frechet_distance_of_a_set_with_itself_is_zero_and_a_shift_adds_its_square() -> None:
    rows = np.random.default_rng(0).standard_normal((500, 16))
    assert frechet_distance(rows, rows) == pytest.approx(0.0, abs=1e-6)
    shift = np.zeros(16)
    shift[3] = 2.0
    assert frechet_distance(rows, rows + shift) == pytest.approx(4.0, rel=1e-6)  # same covariance: |d|^2
    wider = frechet_distance(rows, rows * 2)  # |mu|^2 + Tr(C + 4C - 2 * 2C) = |mu|^2 + Tr(C)
    expected = np.sum(rows.mean(axis=0) ** 2) + np.trace(np.cov(rows, rowvar=False))
    assert wider == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        frechet_distance(rows[:1], rows)


def test_diversity_of_duplicates_is_zero_and_of_the_data_itself_one() -> None:
    images = torch.rand(40, 1, 8, 8)
    big = torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear").numpy()
    assert to_native(big, 8).shape == (40, 1, 8, 8)
    assert diversity_ratio(big, big, 8) == pytest.approx(1.0)
    copies = np.repeat(big[:1], 40, axis=0)
    assert diversity_ratio(copies, big, 8) == pytest.approx(0.0, abs=1e-6)
    two = np.stack([np.zeros((1, 2, 2)), np.ones((1, 2, 2))])
    assert mean_pairwise_distance(two) == pytest.approx(2.0)  # sqrt(4 pixels * 1^2)


def test_measure_groups_by_class_and_marks_missing_classes() -> None:
    rng = np.random.default_rng(1)
    images = rng.random((60, 1, 8, 8))
    features = rng.standard_normal((60, 4))
    classes = np.arange(60) % 3
    reference = RealReference.of(images, features, classes, 8, num_classes=4)
    quality = measure(images, features, classes, reference)
    assert quality.fid == pytest.approx(0.0, abs=1e-6) and quality.diversity == pytest.approx(1.0)
    assert quality.class_diversity[:3] == pytest.approx((1.0, 1.0, 1.0)) and np.isnan(quality.class_diversity[3])
    assert quality.min_class_diversity == pytest.approx(1.0)


def _real_sampler(images: ImageSet, duplicate: bool) -> Sampler:
    """Stands in for a generator: real images of the asked class (or one copy of each class's first)."""

    def sample(latent: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
        assert classes is not None
        picked = []
        for position, c in enumerate(classes.tolist()):
            pool = images.images[images.labels == c]
            picked.append(pool[0 if duplicate else position % len(pool)])
        return torch.stack(picked)

    return sample


def test_evaluator_sees_real_digits_as_diverse_and_copies_as_collapsed(classifier_repo: Path) -> None:
    judge = Judge.find("digits_cnn", classifier_repo)
    split = load_dataset("digits")
    evaluator = GanEvaluator(judge, split.train, 8, 10, conditional=True, latent_dim=64, samples=300)
    real = evaluator(_real_sampler(split.val, duplicate=False), seed=0)
    copies = evaluator(_real_sampler(split.val, duplicate=True), seed=0)
    assert real.quality.min_class_diversity > 0.8 and copies.quality.min_class_diversity == pytest.approx(0.0)
    assert [c.name for c in real.checks] == ["asked_class_confident_share", "min_class_diversity"]
    assert real.checks[1].passed and not copies.checks[1].passed
    assert real.quality.fid < copies.quality.fid
    assert len(real.metrics["class_fid"]) == 10 and real.metrics["truncation"] == 1.0


def test_training_returns_the_best_evaluated_epoch_not_the_last(tmp_path: Path) -> None:
    digits = load_dataset("digits", image_size=8)
    small = ImageSet(digits.train.images[:64], digits.train.labels[:64])
    split = DataSplit(digits.name, digits.classes, small, small, digits.train_index[:64], digits.val_index[:64])
    seen: list[dict[str, torch.Tensor]] = []

    def evaluate(generator: Generator) -> Evaluation:
        seen.append({k: v.clone() for k, v in generator.state_dict().items()})
        good = len(seen) == 2  # the second evaluation (epoch 2) is the only one that passes
        quality = Quality(fid=1.0, class_fid=(), diversity=1.0, class_diversity=())
        return Evaluation([check("made_up", float(good), 1.0)], {}, quality)

    config = GanConfig(image_size=16, native_size=8, g_width=8, d_width=8)
    run = train_gan(split, config, GanTrainConfig(epochs=3, batch_size=32, eval_every=1), tmp_path, evaluate)
    assert run.selected_epoch == 2 and [e["epoch"] for e in run.evaluations] == [1, 2, 3]
    chosen = run.generator.state_dict()
    assert all(torch.equal(chosen[k], seen[1][k]) for k in chosen)
    assert not all(torch.equal(chosen[k], seen[2][k]) for k in chosen)
    assert run.generator(torch.randn(2, 64)).shape == (2, 1, 16, 16)  # upsampled from 8x8 in the graph
