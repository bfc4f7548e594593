"""The GAN presets the default models train with, and why (measured on digits; docs/gan.md has the tables)."""

from __future__ import annotations

from typing import Any

# Measured on digits (2 shared cores; 1,000 samples judged by the digits classifier; figures in the report). Both
# GANs make 8 x 8 digits (the data's own size; resize-convolution in G) and upsample them bilinearly in the graph,
# as the data loader upsamples the real ones: no grain, and an epoch costs a quarter of one at 16 x 16.
# - unconditional: InfoGAN-style categorical codes (argmax of 40 latent entries; no labels used) make the
#   generator's modes discrete (confident digits), minibatch-std in a batch-norm discriminator keeps them diverse, a
#   code weight of 0.5 keeps every class. At 16 x 16 (transposed convs) seed 0 gave 78% confident, FID 78; at 8 x 8
#   after 70 epochs, 90% confident, smallest class 6.9%, diversity 0.96, FID ~30 (real digits' own: ~9).
# - conditional: hinge + spectral norm + projection discriminator + minibatch-std, and an AC-GAN head. The AC head
#   buys confidence but collapses classes (weight 1: 98.6% right, the 1s at 0.37x real diversity); without it 91%
#   right and every class >= 0.80x. AC weight 0.3, 60 epochs, served (and judged) at truncation 0.8: generator width
#   64: 99.1% right, every class >= 0.72x, FID 16; width 48: 98.5%, 0.72x, FID 18 in 60% of the time; width 32:
#   97.7%, 0.72x (80 epochs: 98.7% but a class at 0.66x). 45 epochs at width 64: 99.0%, 0.71x, at the edge.
UNCONDITIONAL_MODEL: dict[str, Any] = {"codes": 40, "spectral_norm": False, "minibatch_std": True}
UNCONDITIONAL_TRAINING: dict[str, Any] = {
    "epochs": 70, "loss": "bce", "beta1": 0.5, "lr": 2e-4, "lr_d": 2e-4, "code_weight": 0.5, "eval_from": 30,
}  # fmt: skip
CONDITIONAL_MODEL: dict[str, Any] = {"auxiliary_classifier": True, "minibatch_std": True, "g_width": 48}
CONDITIONAL_TRAINING: dict[str, Any] = {"epochs": 60, "code_weight": 0.3, "eval_from": 30, "truncation": 0.8}
# `truncation` in a training preset (or GanOptions.extra) is not a training option: it is the latent scale the card
# is measured at and the published config's default_truncation (contracts/generation.py)
DIGITS_NATIVE_SIZE = 8  # the digits are 8 x 8 scans: the GANs make and judge them at 8 x 8, upsampled in the graph
DEFAULT_TRUNCATION = 1.0  # when a preset names none
