"""The GAN training loop, unconditional or class-conditional: hinge or non-saturating loss, InfoGAN code / AC-GAN class
term, optional R1, EMA of generator weights with batch-norm recalibration, a sample grid and a checkpoint per epoch.
Given an evaluation (training/gan/evaluation.py), it scores the EMA generator every `eval_every` epochs, shows the
figures in the progress bar and returns the best-scoring one, not the last. Which options the default models use,
and why, is in training/gan/presets.py."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional
from tqdm import tqdm

from cnnserve.training.data import DataSplit
from cnnserve.training.gan.evaluation import Evaluation
from cnnserve.training.gan.losses import discriminator_loss, generator_loss
from cnnserve.training.gan.model import Discriminator, GanConfig, Generator
from cnnserve.training.gan.sampling import generate
from cnnserve.training.plots import plot_curves, save_grid
from cnnserve.training.runs import save_checkpoint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GanTrainConfig:
    epochs: int = 60  # passes over the training split
    batch_size: int = 64  # real images per step
    lr: float = 1e-4  # generator learning rate
    lr_d: float = 4e-4  # discriminator learning rate (two-timescale: D learns faster)
    beta1: float = 0.0  # Adam's first-moment decay (0 suits hinge + spectral norm)
    beta2: float = 0.999  # Adam's second-moment decay
    loss: str = "hinge"  # "hinge" or "bce" (non-saturating, with one-sided label smoothing)
    code_weight: float = 1.0  # weight of the InfoGAN code term / AC-GAN class term (when the model has the head)
    r1_gamma: float = 0.0  # R1 penalty weight: gamma / 2 * |grad_x D(x)|^2 on real images (0 = off)
    ema_decay: float = 0.999  # generator weights published = exponential moving average of training weights
    bn_recalibration_batches: int = 8  # batches of 256 that re-estimate the EMA generator's batch-norm statistics
    eval_every: int = 2  # epochs between evaluations for checkpoint selection (with an evaluation; last always)
    eval_from: int = 1  # first epoch that may be evaluated and selected
    grid_per_class: int = 10  # sample grid: images per row (conditional: one row per class; else 10 rows)
    seed: int = 0  # seeds initialisation, shuffling, noise
    dry_run: bool = False  # one batch of one epoch: a smoke test of the whole pipeline
    device: str = "cpu"  # torch device to train on
    progress_bar: bool = True  # tqdm bar on a terminal (off when jobs run side by side)

    def __post_init__(self) -> None:
        if self.loss not in ("hinge", "bce"):
            raise ValueError(f"loss must be 'hinge' or 'bce', got {self.loss!r}")


@dataclass
class GanRun:
    generator: Generator  # the EMA generator, eval mode, on the CPU
    epochs: int
    seconds: float  # wall time of the training loop
    history: dict[str, list[float]] = field(default_factory=dict)  # per-epoch mean losses
    selected_epoch: int = 0  # the epoch whose EMA generator this is (the last one without an evaluation)
    evaluations: list[dict[str, float]] = field(default_factory=list)  # per evaluated epoch: its figures


def train_gan(split: DataSplit, model_config: GanConfig, config: GanTrainConfig, out_dir: Path,
              evaluate: Callable[[Generator], Evaluation] | None = None) -> GanRun:  # fmt: skip
    """`split` at any size: D sees its images at the model's working size (area-resized when they differ)."""
    device = torch.device(config.device)
    started = time.monotonic()
    rng = torch.Generator().manual_seed(config.seed)
    generator, discriminator = Generator(model_config).to(device), Discriminator(model_config).to(device)
    ema = copy.deepcopy(generator).eval().requires_grad_(False)
    betas = (config.beta1, config.beta2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=betas)
    real_all = (_at_size(split.train.images, model_config.working_size) * 2 - 1).to(device)  # [N, C, n, n] in [-1, 1]
    labels_all = split.train.labels.to(device)
    n_classes, latent_dim = model_config.num_classes, model_config.latent_dim
    fixed_latent, fixed_classes = _fixed_noise(model_config, config, rng)
    steps_per_epoch = 1 if config.dry_run else max(len(real_all) // config.batch_size, 1)
    epochs = 1 if config.dry_run else config.epochs
    history: dict[str, list[float]] = {"d_loss": [], "g_loss": []}
    bar = tqdm(
        range(1, epochs + 1), desc=f"gan {split.name}", unit="epoch", disable=None if config.progress_bar else True
    )
    step = 0
    evaluations: list[dict[str, float]] = []
    best: tuple[int, tuple[int, float], dict[str, torch.Tensor]] | None = None  # (epoch, score, EMA weights)
    for epoch in bar:
        generator.train()
        discriminator.train()
        order = torch.randperm(len(real_all), generator=rng).to(device)
        d_sum = g_sum = 0.0
        for i in range(steps_per_epoch):
            index = order[i * config.batch_size : (i + 1) * config.batch_size]
            index = index[: len(index) - len(index) % model_config.pack]  # whole packs only
            real, labels = real_all[index], labels_all[index] if n_classes else None
            b = len(index)
            latent = torch.randn(b, latent_dim, generator=rng).to(device)  # [B, latent_dim]
            asked = torch.randint(0, n_classes, (b,), generator=rng).to(device) if n_classes else None
            fake = generator.native(latent, asked)  # [B, C, n, n]

            # update D: real vs fake (+ InfoGAN: recover the fake's code; AC-GAN: classify the real images)
            if config.r1_gamma > 0:
                real = real.detach().requires_grad_(True)
            h_real, h_fake = discriminator.features(real), discriminator.features(fake.detach())
            real_scores = discriminator.head(h_real, labels)
            d_loss = discriminator_loss(real_scores, discriminator.head(h_fake, asked), config.loss)
            if config.r1_gamma > 0:  # R1: penalise D's gradient on real images, a smoother D drops fewer modes
                (grad,) = torch.autograd.grad(real_scores.sum(), real, create_graph=True)
                d_loss = d_loss + config.r1_gamma / 2 * grad.pow(2).flatten(1).sum(1).mean()
            code = generator.code(latent) if model_config.codes else asked
            if model_config.codes and code is not None:
                d_loss = d_loss + config.code_weight * functional.cross_entropy(discriminator.code_logits(h_fake), code)
            elif model_config.auxiliary_classifier and labels is not None:
                d_loss = d_loss + config.code_weight * functional.cross_entropy(
                    discriminator.code_logits(h_real), labels
                )
            opt_d.zero_grad(set_to_none=True)
            torch.autograd.backward(d_loss)
            opt_d.step()

            # update G: raise D(G(z)) (+ make its code / asked class recoverable from the image)
            h_fake = discriminator.features(fake)
            g_loss = generator_loss(discriminator.head(h_fake, asked), config.loss)
            if code is not None and discriminator.code_head is not None:
                g_loss = g_loss + config.code_weight * functional.cross_entropy(discriminator.code_logits(h_fake), code)
            opt_g.zero_grad(set_to_none=True)
            torch.autograd.backward(g_loss)
            opt_g.step()

            step += 1
            _ema_update(ema, generator, min(config.ema_decay, (1 + step) / (10 + step)))
            d_sum, g_sum = d_sum + d_loss.item(), g_sum + g_loss.item()
        history["d_loss"].append(d_sum / steps_per_epoch)
        history["g_loss"].append(g_sum / steps_per_epoch)
        postfix = {"d_loss": f"{history['d_loss'][-1]:.3f}", "g_loss": f"{history['g_loss'][-1]:.3f}"}
        logger.info("run=%s epoch=%d d_loss=%.4f g_loss=%.4f",
                    out_dir.name, epoch, history["d_loss"][-1], history["g_loss"][-1])  # fmt: skip
        if evaluate is not None and _evaluated(epoch, epochs, config):
            candidate = copy.deepcopy(ema)
            # its own generator: evaluating must not change the training run's random stream
            recalibrate_batch_norm(candidate, config.bn_recalibration_batches, torch.Generator().manual_seed(epoch))
            evaluation = evaluate(candidate)
            evaluations.append({"epoch": epoch, **{c.name: c.value for c in evaluation.checks},
                                "fid": round(evaluation.quality.fid, 3)})  # fmt: skip
            if best is None or evaluation.score > best[1]:
                best = (epoch, evaluation.score, copy.deepcopy(candidate.state_dict()))
            postfix["eval"] = evaluation.summary()
            logger.info("run=%s epoch=%d %s best_epoch=%d", out_dir.name, epoch, evaluation.summary(), best[0])
        bar.set_postfix(postfix)
        samples = generate(ema, fixed_latent, fixed_classes)
        save_grid(samples.numpy(), n_classes or 10, out_dir / "samples" / f"epoch-{epoch:03d}.png")
        save_checkpoint(out_dir, epoch, {
            "generator": generator.state_dict(), "discriminator": discriminator.state_dict(), "ema": ema.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "model_config": model_config.to_dict(),
            "classes": list(split.classes), "metrics": {k: v[-1] for k, v in history.items()},
        })  # fmt: skip
    if best is not None:
        selected = best[0]
        ema.load_state_dict(best[2])
        logger.info("run=%s selected_epoch=%d of %d", out_dir.name, selected, epochs)
    else:
        selected = epochs
        recalibrate_batch_norm(ema, config.bn_recalibration_batches, rng)
    ema.cpu().eval()
    save_grid(generate(ema, fixed_latent.cpu(), None if fixed_classes is None else fixed_classes.cpu()).numpy(),
              n_classes or 10, out_dir / "samples_final.png")  # fmt: skip
    plot_curves(history, out_dir / "curves.png", f"GAN on {split.name}")
    return GanRun(ema, epochs, time.monotonic() - started, history, selected, evaluations)


def _evaluated(epoch: int, epochs: int, config: GanTrainConfig) -> bool:
    return epoch == epochs or (epoch >= config.eval_from and (epoch - config.eval_from) % config.eval_every == 0)


def _at_size(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    return functional.interpolate(images, size=(size, size), mode="area")


def _fixed_noise(
    model_config: GanConfig, config: GanTrainConfig, rng: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The same latents every epoch, so grids are comparable; conditional: row r asks for class r."""
    rows = model_config.num_classes or 10
    latent = torch.randn(rows * config.grid_per_class, model_config.latent_dim, generator=rng)
    if not model_config.conditional:
        return latent, None
    return latent, torch.arange(rows).repeat_interleave(config.grid_per_class)


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e_param, param in zip(ema.parameters(), model.parameters(), strict=True):
        e_param.lerp_(param, 1.0 - decay)
    for e_buffer, buffer in zip(ema.buffers(), model.buffers(), strict=True):
        e_buffer.copy_(buffer)


@torch.no_grad()
def recalibrate_batch_norm(generator: Generator, batches: int, rng: torch.Generator) -> None:
    """Batch-norm statistics copied from the training generator do not match the EMA weights: re-estimate them."""
    norms = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
    if not norms or batches <= 0:
        return
    device = next(generator.parameters()).device
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    generator.train()
    cfg = generator.config
    for _ in range(batches):
        latent = torch.randn(256, cfg.latent_dim, generator=rng).to(device)
        classes = torch.randint(0, cfg.num_classes, (256,), generator=rng).to(device) if cfg.conditional else None
        generator(latent, classes)
    for m in norms:
        m.momentum = 0.1
    generator.eval()
