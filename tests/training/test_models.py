"""Model output shapes and configuration validation."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from cnnserve.training.classifier.benchmark import HEAVY_CNN, count_flops
from cnnserve.training.classifier.model import Classifier, ClassifierConfig
from cnnserve.training.gan.model import Discriminator, GanConfig, Generator


@pytest.mark.parametrize(
    "config",
    [
        ClassifierConfig(),
        ClassifierConfig(in_channels=3, image_size=32, num_classes=4, channels=(8, 16, 32), kernel_sizes=(5, 3, 3)),
        ClassifierConfig(batch_norm=False, dropout=0.0, channels=(4,), kernel_sizes=(1,)),
    ],
)
def test_classifier_outputs_logits_per_class(config: ClassifierConfig) -> None:
    model = Classifier(config).eval()
    images = torch.randn(5, config.in_channels, config.image_size, config.image_size)
    assert model(images).shape == (5, config.num_classes)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channels": (8, 16), "kernel_sizes": (3,)},
        {"kernel_sizes": (3, 4)},
        {"image_size": 18},
        {"in_channels": 2},
    ],
)
def test_classifier_config_refuses_inconsistent_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ClassifierConfig(**kwargs)  # type: ignore[arg-type]


def test_classifier_config_round_trips_through_a_dict() -> None:
    config = ClassifierConfig(channels=(8, 16, 32), kernel_sizes=(3, 3, 5))
    assert ClassifierConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "config",
    [
        GanConfig(),
        GanConfig(num_classes=10),
        GanConfig(codes=10),
        GanConfig(image_size=32, channels=3, spectral_norm=False),
    ],
)
def test_generator_and_discriminator_shapes(config: GanConfig) -> None:
    generator, discriminator = Generator(config).eval(), Discriminator(config)
    latent = torch.randn(6, config.latent_dim)
    classes = torch.randint(0, 10, (6,)) if config.conditional else None
    images = generator(latent, classes)
    assert images.shape == (6, config.channels, config.image_size, config.image_size)
    assert images.min() >= -1 and images.max() <= 1  # tanh
    assert discriminator(images, classes).shape == (6 // config.pack,)
    if discriminator.code_head is not None:
        heads = config.codes or config.num_classes
        assert discriminator.code_logits(discriminator.features(images)).shape == (6, heads)


def test_conditional_generator_depends_on_the_class() -> None:
    generator = Generator(GanConfig(num_classes=10)).eval()
    latent = torch.randn(1, 64).repeat(2, 1)
    images = generator(latent, torch.tensor([3, 7]))
    assert not torch.allclose(images[0], images[1])
    with pytest.raises(ValueError):
        generator(latent)


@pytest.mark.parametrize(
    "kwargs", [{"image_size": 12}, {"image_size": 4}, {"channels": 2}, {"num_classes": 10, "codes": 10}]
)
def test_gan_config_refuses_inconsistent_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        GanConfig(**kwargs)


def test_heavy_cnn_costs_a_tenth_to_three_tenths_of_a_gflop() -> None:
    assert 0.1e9 <= count_flops(HEAVY_CNN) <= 0.3e9
    # The count matches the architecture: the digits CNN's first conv alone is 2*16*16*1*32*9 FLOPs.
    small = ClassifierConfig(channels=(32,), kernel_sizes=(3,), hidden=8, num_classes=2)
    assert count_flops(small) == 2 * 16 * 16 * 32 * 9 + 2 * 32 * 8 * 8 * 8 + 2 * 8 * 2


def test_packing_discriminator_refuses_a_batch_that_does_not_split() -> None:
    discriminator = Discriminator(GanConfig(pack=2))
    with pytest.raises(ValueError):
        discriminator(torch.randn(3, 1, 16, 16))
