"""The adversarial losses: hinge (the default, and the conditional preset's) or non-saturating BCE with one-sided
label smoothing (the unconditional preset's)."""

from __future__ import annotations

import torch
from torch.nn import functional


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "hinge":  # maximise min(0, -1 + D(x)) + min(0, -1 - D(G(z)))
        return functional.relu(1 - real).mean() + functional.relu(1 + fake).mean()
    smooth = torch.full_like(real, 0.9)  # one-sided label smoothing: real targets 0.9
    return (functional.binary_cross_entropy_with_logits(real, smooth)
            + functional.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))  # fmt: skip


def generator_loss(fake: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "hinge":
        return -fake.mean()
    return functional.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))  # non-saturating
