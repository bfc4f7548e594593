"""The style network's training loop: random crops of the content photos, the random-filter loss of losses.py
(Gram style + feature content + total variation), Adam with a cosine decay, progress and curves under runs/."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from cnnserve.training.plots import plot_curves
from cnnserve.training.runs import save_checkpoint
from cnnserve.training.style.data import ContentCrops
from cnnserve.training.style.losses import (
    LOSS_NET_SEED,
    RandomFeatures,
    content_distance,
    gram_distance,
    style_grams,
    total_variation,
)
from cnnserve.training.style.model import Stylizer, StylizerConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StyleTrainConfig:
    steps: int = 180  # optimiser steps (a step is one batch of fresh random crops)
    batch_size: int = 4  # crops per step
    crop: int = 128  # crop side in pixels; the net is fully convolutional, so it serves any size
    lr: float = 2e-3  # Adam's peak learning rate, decayed by a cosine to 5% of it
    style_weight: float = 1.0  # on the Gram distance (a sum over stages of relative squared errors)
    content_weight: float = 0.5  # on the relative feature distance at the loss net's content stage
    tv_weight: float = 0.1  # on the mean absolute neighbour difference: against speckle
    style_side: int = 256  # the style image's shorter side when its Gram targets are taken
    loss_net_seed: int = LOSS_NET_SEED  # the random loss network's seed (recorded in the report)
    log_every: int = 50  # steps per progress line and curve point
    seed: int = 0  # seeds initialisation and every crop drawn
    dry_run: bool = False  # one step: a smoke test of the whole pipeline
    device: str = "cpu"
    progress_bar: bool = True  # tqdm bar on a terminal (off when jobs run side by side)


@dataclass
class StyleRun:
    model: Stylizer  # trained, eval mode, on the CPU
    seconds: float  # wall time of the training loop
    steps: int  # optimiser steps taken
    history: dict[str, list[float]]  # per log interval: mean loss parts


def train_style(content: ContentCrops, style: torch.Tensor, model_config: StylizerConfig,
                config: StyleTrainConfig, out_dir: Path, name: str = "style") -> StyleRun:  # fmt: skip
    """`style`: the style image [1, 3, H, W] in [0, 1], already at config.style_side."""
    device = torch.device(config.device)
    started = time.monotonic()
    torch.manual_seed(config.seed)
    model = Stylizer(model_config).to(device)
    loss_net = RandomFeatures(config.loss_net_seed).to(device)
    targets = style_grams(loss_net, style.to(device))
    steps = 1 if config.dry_run else config.steps
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps, eta_min=config.lr * 0.05)
    rng = torch.Generator().manual_seed(config.seed)
    history: dict[str, list[float]] = {"step": [], "loss": [], "style_loss": [], "content_loss": [], "tv_loss": []}
    sums = {"loss": 0.0, "style_loss": 0.0, "content_loss": 0.0, "tv_loss": 0.0}
    counted = 0
    bar = tqdm(range(1, steps + 1), desc=name, unit="step", disable=None if config.progress_bar else True)
    model.train()
    for step in bar:
        photos = content.sample(config.batch_size, rng).to(device)
        styled = model(photos)
        features = loss_net(styled)
        with torch.no_grad():
            originals = loss_net(photos)
        # minimise: Gram distance to the style + feature distance to the photo + a little total variation
        style_loss = gram_distance(features, targets).mean()
        content_loss = content_distance(features, originals, loss_net.config.content_stage).mean()
        tv_loss = total_variation(styled).mean()
        loss = config.style_weight * style_loss + config.content_weight * content_loss + config.tv_weight * tv_loss
        optimiser.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimiser.step()
        schedule.step()
        parts = {"loss": loss.item(), "style_loss": style_loss.item(), "content_loss": content_loss.item(),
                 "tv_loss": tv_loss.item()}  # fmt: skip
        sums = {k: sums[k] + v for k, v in parts.items()}
        counted += 1
        if step % config.log_every == 0 or step == steps:
            means = {k: v / counted for k, v in sums.items()}
            history["step"].append(float(step))
            for key, value in means.items():
                history[key].append(value)
            bar.set_postfix(loss=f"{means['loss']:.3f}", style=f"{means['style_loss']:.3f}")
            logger.info("run=%s step=%d/%d elapsed_s=%.1f %s", out_dir.name, step, steps,
                        time.monotonic() - started, " ".join(f"{k}={v:.4f}" for k, v in means.items()))  # fmt: skip
            sums = dict.fromkeys(sums, 0.0)
            counted = 0
    model.eval().cpu()
    seconds = time.monotonic() - started
    save_checkpoint(out_dir, 1, {"model": model.state_dict(), "model_config": model_config.to_dict(),
                                 "metrics": {k: v[-1] for k, v in history.items() if v}})  # fmt: skip
    curves = {k: v for k, v in history.items() if k != "step"}
    plot_curves(curves, out_dir / "curves.png", f"{name}: loss parts per {config.log_every} steps",
                families=("loss",))  # fmt: skip
    return StyleRun(model, seconds, steps, history)
