"""The classifier's training loop: AdamW with a one-cycle schedule, random-affine augmentation, per-epoch
validation, checkpoints, curves and a confusion matrix."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional
from tqdm import tqdm

from cnnserve.training.classifier.data import channel_stats, normalise, random_affine
from cnnserve.training.classifier.model import Classifier, ClassifierConfig
from cnnserve.training.data import DataSplit
from cnnserve.training.plots import plot_confusion, plot_curves
from cnnserve.training.runs import save_checkpoint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifierTrainConfig:
    epochs: int = 30  # passes over the training split
    batch_size: int = 64  # images per optimiser step
    lr: float = 3e-3  # peak learning rate of the one-cycle schedule
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    augment: bool = True  # random shift / rotation / scale of training images
    max_shift_px: float = 2.0  # augmentation: largest shift, in pixels
    max_rotate_deg: float = 10.0  # augmentation: largest rotation, in degrees
    max_scale: float = 0.1  # augmentation: largest relative zoom in or out
    seed: int = 0  # seeds initialisation, shuffling and augmentation
    dry_run: bool = False  # one batch of one epoch: a smoke test of the whole pipeline
    device: str = "cpu"  # torch device to train on
    progress_bar: bool = True  # tqdm bar on a terminal (off when jobs run side by side)


@dataclass
class ClassifierRun:
    model: Classifier  # trained, in eval mode, on the CPU
    mean: list[float]  # per-channel mean of the training split (input normalisation)
    std: list[float]  # per-channel std of the training split
    val_accuracy: float
    confusion: np.ndarray  # [true, predicted] counts on the validation split
    seconds: float  # wall time of the training loop
    history: dict[str, list[float]] = field(default_factory=dict)  # per-epoch metrics


def train_classifier(
    split: DataSplit, model_config: ClassifierConfig, config: ClassifierTrainConfig, out_dir: Path
) -> ClassifierRun:
    device = torch.device(config.device)
    started = time.monotonic()
    mean, std = channel_stats(split.train.images)
    model = Classifier(model_config).to(device)
    x_train, y_train = split.train.images.to(device), split.train.labels.to(device)
    x_val, y_val = normalise(split.val.images, mean, std).to(device), split.val.labels.to(device)
    steps_per_epoch = 1 if config.dry_run else -(-len(y_train) // config.batch_size)
    epochs = 1 if config.dry_run else config.epochs
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=epochs * steps_per_epoch)
    rng = torch.Generator().manual_seed(config.seed)
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "train_accuracy": [], "val_accuracy": []}
    bar = tqdm(
        range(1, epochs + 1),
        desc=f"classifier {split.name}",
        unit="epoch",
        disable=None if config.progress_bar else True,
    )
    for epoch in bar:
        model.train()
        order = torch.randperm(len(y_train), generator=rng).to(device)
        loss_sum, correct, seen = 0.0, 0, 0
        for step in range(steps_per_epoch):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            images, labels = x_train[index], y_train[index]
            if config.augment:
                images = random_affine(images, rng, config.max_shift_px, config.max_rotate_deg, config.max_scale)
            logits = model(normalise(images, mean, std))  # [B, num_classes]
            loss = functional.cross_entropy(logits, labels)
            optimiser.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            optimiser.step()
            schedule.step()
            loss_sum += loss.item() * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
        val_loss, val_accuracy, _ = evaluate(model, x_val, y_val, len(split.classes))
        history["train_loss"].append(loss_sum / seen)
        history["train_accuracy"].append(correct / seen)
        history["val_loss"].append(val_loss)
        history["val_accuracy"].append(val_accuracy)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", val_acc=f"{val_accuracy:.4f}")
        logger.info("run=%s epoch=%d train_loss=%.4f train_accuracy=%.4f val_loss=%.4f val_accuracy=%.4f",
                    out_dir.name, epoch, loss_sum / seen, correct / seen, val_loss, val_accuracy)  # fmt: skip
        save_checkpoint(out_dir, epoch, {
            "model": model.state_dict(), "optimiser": optimiser.state_dict(), "model_config": model_config.to_dict(),
            "mean": mean, "std": std, "classes": list(split.classes), "metrics": {k: v[-1] for k, v in history.items()},
        })  # fmt: skip
    model.eval()
    _, val_accuracy, confusion = evaluate(model, x_val, y_val, len(split.classes))
    model.cpu()
    seconds = time.monotonic() - started
    plot_curves(history, out_dir / "curves.png", f"classifier on {split.name}")
    plot_confusion(confusion, split.classes, out_dir / "confusion_matrix.png",
                   f"validation accuracy {val_accuracy:.4f}")  # fmt: skip
    return ClassifierRun(model, mean, std, val_accuracy, confusion, seconds, history)


@torch.no_grad()
def evaluate(
    model: Classifier, images: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[float, float, np.ndarray]:
    """(mean loss, accuracy, confusion matrix) of normalised `images` in eval mode."""
    model.eval()
    logits = torch.cat([model(images[i : i + 512]) for i in range(0, len(images), 512)])  # [N, num_classes]
    loss = float(functional.cross_entropy(logits, labels)) if len(labels) else 0.0
    predicted = logits.argmax(1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels.cpu().numpy(), predicted.cpu().numpy()), 1)
    accuracy = float((predicted == labels).float().mean()) if len(labels) else 0.0
    return loss, accuracy, confusion
