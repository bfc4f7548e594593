"""A generator's report card and its checkpoint score: 1,000 seeded samples labelled by the judge (confident and
right), a Frechet distance in the judge's penultimate features and intra-class diversity (training/gan/measures.py).

The same evaluation picks the checkpoint during training (on other latents than the card's, so the card does not
grade the samples it was chosen on) and writes the card at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cnnserve.training.data import ImageSet
from cnnserve.training.gan.judge import Judge
from cnnserve.training.gan.measures import Quality, RealReference, frechet_distance, measure
from cnnserve.training.gan.report import (
    GAN_REPORT_SAMPLES,
    MIN_CLASS_DIVERSITY,
    MIN_DIVERSITY,
    conditional_gan_checks,
    gan_checks,
)
from cnnserve.training.report import Check, check

Sampler = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
"""(latent, classes) -> [0, 1] images at the judge's size: a generator (sampling.generate) or its ONNX file."""


@dataclass(frozen=True)
class Evaluation:
    checks: list[Check]
    metrics: dict[str, Any]
    quality: Quality

    @property
    def score(self) -> tuple[int, float]:
        """Larger is better: checks passed first, then a lower FID."""
        return sum(c.passed for c in self.checks), -self.quality.fid

    def summary(self) -> str:
        """One line for the progress bar and the log."""
        q = self.quality
        first = self.checks[0]
        return (f"{first.name}={first.value:.3f} fid={q.fid:.2f} div={q.diversity:.2f} "
                f"min_class_div={q.min_class_diversity:.2f}")  # fmt: skip


class GanEvaluator:
    """Scores generators against real images [N, C, S, S] in [0, 1] (the judge's size) and their labels."""

    def __init__(self, judge: Judge, real: ImageSet, native_size: int, num_classes: int, conditional: bool,
                 latent_dim: int, truncation: float = 1.0, samples: int = GAN_REPORT_SAMPLES) -> None:  # fmt: skip
        self.judge = judge
        images = real.images.numpy()
        self.reference = RealReference.of(images, judge.judge(images)[1], real.labels.numpy(), native_size,
                                          num_classes)  # fmt: skip
        self.num_classes = num_classes
        self.conditional = conditional
        self.latent_dim = latent_dim
        self.truncation = truncation
        self.samples = samples

    def __call__(self, sampler: Sampler, seed: int) -> Evaluation:
        """`samples` images from latents seeded by `seed`, scaled by the truncation; conditional: equal numbers
        asked of every class."""
        latent = torch.randn(self.samples, self.latent_dim, generator=torch.Generator().manual_seed(seed))
        asked = torch.arange(self.samples) % self.num_classes if self.conditional else None
        images = sampler(latent * self.truncation, asked).numpy()
        probabilities, features = self.judge.judge(images)
        if asked is None:
            checks, metrics = gan_checks(probabilities)
            classes = probabilities.argmax(axis=1)  # grouped by what the judge sees
        else:
            checks, metrics = conditional_gan_checks(probabilities, asked.numpy())
            classes = asked.numpy()
        quality = measure(images, features, classes, self.reference)
        checks += diversity_checks(quality, self.conditional)
        metrics |= quality.as_metrics() | {"truncation": self.truncation, "judge": str(self.judge.path)}
        return Evaluation(checks, metrics, quality)


def diversity_checks(quality: Quality, conditional: bool) -> list[Check]:
    """Conditional: every class at least MIN_CLASS_DIVERSITY of real; unconditional: all samples MIN_DIVERSITY."""
    if conditional:
        return [check("min_class_diversity", np.nan_to_num(quality.min_class_diversity), MIN_CLASS_DIVERSITY)]
    return [check("diversity", quality.diversity, MIN_DIVERSITY)]


def real_fid_floor(judge: Judge, train: ImageSet, val: ImageSet) -> float:
    """FID of the validation split to the training split: what real digits score, a scale for the figures."""
    return frechet_distance(judge.judge(val.images.numpy())[1], judge.judge(train.images.numpy())[1])
