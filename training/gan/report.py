"""A GAN's report-card checks: a trained classifier (the judge, gan/judge.py) labels 1,000 generated images;
unconditional: a large share labelled confidently and every class among them; conditional: the class asked for,
confidently. Frechet distance and diversity are measured beside them (gan/measures.py, gan/evaluation.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnserve.training.report import Check, check

CONFIDENCE = 0.9  # a generated image counts when the judge's softmax confidence is at least this
MIN_CONFIDENT = 0.85  # unconditional GAN: share of generated images the judge labels confidently
MIN_CLASS_SHARE_TIMES_CLASSES = 0.5  # each class >= 0.5 / num_classes of confident labels (5% for 10 classes)
MIN_CONDITIONAL_HITS = 0.98  # conditional GAN: share labelled confidently as the class asked for
MIN_CLASS_DIVERSITY = 0.7  # conditional GAN: every class's samples at least this diverse, relative to real ones
MIN_DIVERSITY = 0.85  # unconditional GAN: all samples at least this diverse, relative to real digits
GAN_REPORT_SAMPLES = 1000


def gan_checks(probabilities: np.ndarray) -> tuple[list[Check], dict[str, Any]]:
    """Unconditional: share labelled confidently, and each class's share of those labels."""
    num_classes = probabilities.shape[1]
    confident = probabilities.max(axis=1) >= CONFIDENCE
    labels = probabilities.argmax(axis=1)[confident]
    shares = np.bincount(labels, minlength=num_classes) / max(len(labels), 1)
    checks = [
        check("confident_share", confident.mean(), MIN_CONFIDENT),
        check("min_class_share", shares.min(), MIN_CLASS_SHARE_TIMES_CLASSES / num_classes),
    ]
    metrics = {"samples": len(probabilities), "class_shares": [round(float(s), 4) for s in shares]}
    return checks, metrics


def conditional_gan_checks(probabilities: np.ndarray, asked: np.ndarray) -> tuple[list[Check], dict[str, Any]]:
    """Conditional: share labelled confidently as the class asked for (equal numbers asked per class)."""
    hit = (probabilities.max(axis=1) >= CONFIDENCE) & (probabilities.argmax(axis=1) == asked)
    per_class = [float(hit[asked == c].mean()) for c in range(probabilities.shape[1]) if np.any(asked == c)]
    checks = [check("asked_class_confident_share", hit.mean(), MIN_CONDITIONAL_HITS)]
    metrics = {"samples": len(probabilities), "per_class_hits": [round(s, 4) for s in per_class]}
    return checks, metrics
