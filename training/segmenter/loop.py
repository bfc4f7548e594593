"""The segmenter's training loop: fresh scenes every step (digits) or random picks of a folder's images, AdamW with
a one-cycle schedule, the losses of losses.py, a per-epoch validation mIoU / found, curves and checkpoints."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from cnnserve.training.plots import plot_curves
from cnnserve.training.runs import save_checkpoint
from cnnserve.training.segmenter.losses import LossWeights, centre_targets, segmenter_loss
from cnnserve.training.segmenter.model import ExportedSegmenter, Segmenter, SegmenterConfig
from cnnserve.training.segmenter.report import score_scenes
from cnnserve.training.segmenter.scenes import Scenes

logger = logging.getLogger(__name__)

# Draws a training batch of `n` scenes; the generator makes it reproducible.
SceneSampler = Callable[[int, torch.Generator], Scenes]


@dataclass(frozen=True)
class SegmenterTrainConfig:
    epochs: int = 8  # an "epoch" is steps_per_epoch fresh batches (scenes are generated, never repeated)
    steps_per_epoch: int = 40
    batch_size: int = 32  # scenes per optimiser step
    lr: float = 4e-3  # peak learning rate of the one-cycle schedule
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    loss_weights: LossWeights = field(default_factory=LossWeights)
    seed: int = 0  # seeds initialisation and every scene drawn
    dry_run: bool = False  # one batch of one epoch: a smoke test of the whole pipeline
    device: str = "cpu"
    progress_bar: bool = True  # tqdm bar on a terminal (off when jobs run side by side)


@dataclass
class SegmenterRun:
    model: Segmenter  # trained, eval mode, on the CPU
    seconds: float  # wall time of the training loop
    steps: int  # optimiser steps taken
    history: dict[str, list[float]]  # per-epoch metrics


def train_segmenter(
    sample: SceneSampler, val: Scenes, model_config: SegmenterConfig, config: SegmenterTrainConfig, out_dir: Path,
    name: str = "segmenter",
) -> SegmenterRun:  # fmt: skip
    device = torch.device(config.device)
    started = time.monotonic()
    model = Segmenter(model_config).to(device)
    epochs, steps = (1, 1) if config.dry_run else (config.epochs, config.steps_per_epoch)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=epochs * steps,
                                                   pct_start=0.2)  # fmt: skip
    rng = torch.Generator().manual_seed(config.seed)
    history: dict[str, list[float]] = {"train_loss": [], "val_miou": [], "val_found": []}
    bar = tqdm(range(1, epochs + 1), desc=name, unit="epoch", disable=None if config.progress_bar else True)
    for epoch in bar:
        model.train()
        loss_sum = 0.0
        parts_sum: dict[str, float] = {}
        for _ in range(steps):
            scenes = sample(config.batch_size, rng)
            targets = centre_targets(scenes, model_config.num_classes)
            outputs = model(scenes.images.to(device))
            loss, parts = segmenter_loss(outputs, scenes.to(device), targets.to(device), config.loss_weights)
            optimiser.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            optimiser.step()
            schedule.step()
            loss_sum += loss.item()
            parts_sum = {k: parts_sum.get(k, 0.0) + v for k, v in parts.items()}
        scores = score_scenes(ExportedSegmenter(model), val, model_config.num_classes)
        history["train_loss"].append(loss_sum / steps)
        history["val_miou"].append(scores.miou)
        history["val_found"].append(scores.found)
        bar.set_postfix(loss=f"{loss_sum / steps:.3f}", miou=f"{scores.miou:.3f}", found=f"{scores.found:.3f}")
        logger.info("run=%s epoch=%d train_loss=%.4f %s val_miou=%.4f val_found=%.4f val_false_box_rate=%.4f",
                    out_dir.name, epoch, loss_sum / steps,
                    " ".join(f"{k}={v / steps:.4f}" for k, v in parts_sum.items()),
                    scores.miou, scores.found, scores.false_box_rate)  # fmt: skip
        save_checkpoint(out_dir, epoch, {"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                                         "model_config": model_config.to_dict(),
                                         "metrics": {k: v[-1] for k, v in history.items()}})  # fmt: skip
    model.eval().cpu()
    seconds = time.monotonic() - started
    plot_curves(
        history,
        out_dir / "curves.png",
        f"{name}: loss; validation mIoU and digits found",
        families=("loss", "miou", "found"),
    )
    return SegmenterRun(model, seconds, epochs * steps, history)
