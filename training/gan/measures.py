"""What a generator's samples are worth beyond "the judge calls them right": a Frechet distance in the judge's
penultimate features ("digits FID", overall and per class) and intra-class diversity at the data's native resolution.

Diversity is the mean pairwise L2 distance between samples of one class, over that of real images of the class, both
taken down to the native size by the same area average; 1.0 means as varied as the data, a collapsed class is near 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Gaussian:
    """A feature set's mean and covariance, with the covariance's square root (the expensive part), kept for the
    real side so every checkpoint's evaluation pays one eigendecomposition per set, not three."""

    mean: np.ndarray  # [D]
    cov: np.ndarray  # [D, D]
    root: np.ndarray  # [D, D], cov^1/2

    @classmethod
    def of(cls, features: np.ndarray) -> Gaussian:
        if len(features) < 2:
            raise ValueError(f"a Frechet distance needs >= 2 rows per set, got {len(features)}")
        rows = features.astype(np.float64)
        cov = np.atleast_2d(np.cov(rows, rowvar=False))
        values, vectors = np.linalg.eigh(cov)
        return cls(rows.mean(axis=0), cov, (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T)


def frechet_to(reference: Gaussian, features: np.ndarray) -> float:
    """|mu_r - mu|^2 + Tr(C_r + C - 2 (C_r C)^1/2) of feature rows [N, D] (N >= 2) to a reference Gaussian."""
    if len(features) < 2:
        raise ValueError(f"a Frechet distance needs >= 2 rows per set, got {len(features)}")
    rows = features.astype(np.float64)
    cov = np.atleast_2d(np.cov(rows, rowvar=False))
    # Tr((C_r C)^1/2) = Tr((R C R)^1/2) with R = C_r^1/2: a symmetric matrix, so eigvalsh, no complex rounding
    inner = np.linalg.eigvalsh(reference.root @ cov @ reference.root)
    trace_root = np.sqrt(np.clip(inner, 0.0, None)).sum()
    distance = np.sum((reference.mean - rows.mean(axis=0)) ** 2) + np.trace(reference.cov) + np.trace(cov)
    return max(float(distance - 2 * trace_root), 0.0)  # rounding can take a set's distance to itself below 0


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Frechet distance between two sets of feature rows [N, D] (N >= 2 each)."""
    return frechet_to(Gaussian.of(a), b)


def to_native(images: np.ndarray, native_size: int) -> np.ndarray:
    """[N, C, S, S] -> [N, C, n, n] by averaging S/n x S/n blocks (S a multiple of n)."""
    n, c, s, _ = images.shape
    if s % native_size:
        raise ValueError(f"image size {s} is not a multiple of the native size {native_size}")
    f = s // native_size
    return np.asarray(images.reshape(n, c, native_size, f, native_size, f).mean(axis=(3, 5)))


def mean_pairwise_distance(images: np.ndarray) -> float:
    """Mean L2 distance over all pairs i < j of images [N, ...] (N >= 2)."""
    if len(images) < 2:
        raise ValueError(f"pairwise distances need >= 2 images, got {len(images)}")
    flat = images.reshape(len(images), -1).astype(np.float64)
    squared = (flat**2).sum(axis=1)
    gram = squared[:, None] + squared[None, :] - 2 * flat @ flat.T
    upper = np.triu_indices(len(flat), k=1)
    return float(np.sqrt(np.clip(gram[upper], 0.0, None)).mean())


def diversity_ratio(generated: np.ndarray, real: np.ndarray, native_size: int) -> float:
    """Mean pairwise distance of `generated` over that of `real`, both [N, C, S, S] taken to native_size first."""
    return mean_pairwise_distance(to_native(generated, native_size)) / mean_pairwise_distance(
        to_native(real, native_size)
    )


@dataclass(frozen=True)
class Quality:
    fid: float  # Frechet distance of all samples to all real images, in the judge's penultimate features
    class_fid: tuple[float, ...]  # per class (conditional: the class asked for; else the judge's label)
    diversity: float  # all samples' pairwise distance over the real images', at native resolution
    class_diversity: tuple[float, ...]  # per class, as class_fid groups them; nan where a class has < 2 samples

    @property
    def min_class_diversity(self) -> float:
        present = [d for d in self.class_diversity if not np.isnan(d)]
        return min(present) if present else float("nan")

    def as_metrics(self) -> dict[str, float | list[float]]:
        return {
            "fid": round(self.fid, 3),
            "class_fid": [round(f, 3) for f in self.class_fid],
            "diversity": round(self.diversity, 4),
            "class_diversity": [round(d, 4) for d in self.class_diversity],
            "min_class_diversity": round(self.min_class_diversity, 4),
        }


@dataclass(frozen=True)
class RealReference:
    """What the measures compare against, computed once: real images' feature Gaussians and native-size spreads,
    overall and per class."""

    overall: Gaussian
    spread: float  # mean pairwise distance at native size
    classes: tuple[tuple[Gaussian, float] | None, ...]  # per class; None where a class has < 2 images
    native_size: int

    @classmethod
    def of(cls, images: np.ndarray, features: np.ndarray, classes: np.ndarray, native_size: int,
           num_classes: int) -> RealReference:  # fmt: skip
        """images [N, C, S, S] in [0, 1], their features [N, D] and classes [N]."""
        native = to_native(images, native_size)
        per_class: list[tuple[Gaussian, float] | None] = []
        for c in range(num_classes):
            mine = classes == c
            per_class.append((Gaussian.of(features[mine]), mean_pairwise_distance(native[mine]))
                             if mine.sum() >= 2 else None)  # fmt: skip
        return cls(Gaussian.of(features), mean_pairwise_distance(native), tuple(per_class), native_size)


def measure(generated: np.ndarray, features: np.ndarray, classes: np.ndarray, real: RealReference) -> Quality:
    """Generated images [N, C, S, S] in [0, 1], their features [N, D] and classes [N] against the reference; a
    class with < 2 samples (or real images) gets nan."""
    native = to_native(generated, real.native_size)
    class_fid: list[float] = []
    class_diversity: list[float] = []
    for c, reference in enumerate(real.classes):
        mine = classes == c
        if reference is None or mine.sum() < 2:
            class_fid.append(float("nan"))
            class_diversity.append(float("nan"))
            continue
        class_fid.append(frechet_to(reference[0], features[mine]))
        class_diversity.append(mean_pairwise_distance(native[mine]) / reference[1])
    return Quality(
        fid=frechet_to(real.overall, features),
        class_fid=tuple(class_fid),
        diversity=mean_pairwise_distance(native) / real.spread,
        class_diversity=tuple(class_diversity),
    )
