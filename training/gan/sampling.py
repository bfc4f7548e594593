"""Images from a generator: [0, 1] pixels in batches, and the truncation grid (the same latents at several scales)."""

from __future__ import annotations

from pathlib import Path

import torch

from cnnserve.training.gan.model import Generator
from cnnserve.training.plots import save_grid


@torch.no_grad()
def generate(generator: Generator, latent: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
    """[0, 1] images [N, C, S, S] from the generator in eval mode, in batches of 500."""
    generator.eval()
    device = next(generator.parameters()).device
    out = [generator(latent[i : i + 500].to(device), None if classes is None else classes[i : i + 500].to(device))
           for i in range(0, len(latent), 500)]  # fmt: skip
    return ((torch.cat(out).cpu() + 1) / 2).clamp(0.0, 1.0)


TRUNCATIONS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)
"""Rows of the truncation grid: the same latents scaled by each factor."""


def save_truncation_grid(generator: Generator, default: float, path: Path, seed: int, columns: int = 12,
                         label: int = 7) -> None:  # fmt: skip
    """One row per truncation factor (TRUNCATIONS and `default`, top to bottom in increasing order), the same
    `columns` latents in every row (conditional: all asking for `label`): fidelity against diversity in one picture."""
    cfg = generator.config
    latent = torch.randn(columns, cfg.latent_dim, generator=torch.Generator().manual_seed(seed + 4))
    classes = torch.full((columns,), label % cfg.num_classes) if cfg.conditional else None
    factors = sorted({*TRUNCATIONS, default})
    rows = [generate(generator, latent * f, classes) for f in factors]
    save_grid(torch.cat(rows).numpy(), len(factors), path)
