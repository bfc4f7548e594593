"""The segmenter's training targets and losses: per-pixel cross-entropy + soft dice on the mask, CenterNet's focal
loss on Gaussian centre heatmaps, and L1 on box size and centre offset at each true centre."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional

from cnnserve.training.segmenter.model import HEAT_STRIDE, SIZE_UNIT_PX
from cnnserve.training.segmenter.scenes import Scenes


@dataclass(frozen=True)
class CentreTargets:
    heat: torch.Tensor  # [N, classes - 1, H/4, W/4]: 1 at each centre cell, a Gaussian around it
    scene: torch.Tensor  # [D] the scene of each true box
    cell_y: torch.Tensor  # [D] its centre's cell row
    cell_x: torch.Tensor  # [D] its centre's cell column
    size: torch.Tensor  # [D, 2] width, height in SIZE_UNIT_PX
    offset: torch.Tensor  # [D, 2] the centre's position within its cell, 0..1

    def to(self, device: torch.device) -> CentreTargets:
        if device.type == "cpu":
            return self
        return CentreTargets(*(t.to(device) for t in (self.heat, self.scene, self.cell_y, self.cell_x, self.size,
                                                      self.offset)))  # fmt: skip


def centre_targets(scenes: Scenes, num_classes: int) -> CentreTargets:
    n, _, height, width = scenes.images.shape
    h, w = height // HEAT_STRIDE, width // HEAT_STRIDE
    boxes = scenes.boxes
    centre = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1) / HEAT_STRIDE
    cell = centre.floor().clamp_min(0)
    cell_x, cell_y = cell[:, 0].clamp_max(w - 1), cell[:, 1].clamp_max(h - 1)
    size_px = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)
    # Spread grows with the box: a neighbour cell of a big digit is nearly as good a centre as the true one.
    sigma = (size_px.amin(1) / HEAT_STRIDE / 6).clamp_min(0.5)  # [D] cells
    ys = torch.arange(h, dtype=torch.float32)[None, :, None]
    xs = torch.arange(w, dtype=torch.float32)[None, None, :]
    bumps = torch.exp(-((ys - cell_y[:, None, None]) ** 2 + (xs - cell_x[:, None, None]) ** 2)
                      / (2 * sigma[:, None, None] ** 2))  # fmt: skip  # [D, h, w]
    heat = torch.zeros(n * (num_classes - 1), h * w)
    channel = scenes.box_scene * (num_classes - 1) + scenes.box_classes - 1
    index = channel[:, None].expand(-1, h * w)
    heat.scatter_reduce_(0, index, bumps.reshape(-1, h * w), reduce="amax", include_self=True)
    return CentreTargets(
        heat=heat.reshape(n, num_classes - 1, h, w), scene=scenes.box_scene, cell_y=cell_y.long(),
        cell_x=cell_x.long(), size=size_px / SIZE_UNIT_PX, offset=centre - cell,
    )  # fmt: skip


def focal_loss(heat_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of centres."""
    prob = torch.sigmoid(heat_logits).clamp(1e-4, 1 - 1e-4)
    positive = target >= 1.0
    pos_loss = -(torch.log(prob) * (1 - prob) ** 2)[positive].sum()
    neg_loss = -(torch.log(1 - prob) * prob**2 * (1 - target) ** 4)[~positive].sum()
    return (pos_loss + neg_loss) / positive.sum().clamp_min(1)


def dice_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """1 - soft dice per class over the batch, averaged over classes present in the batch (or predicted)."""
    prob = logits.softmax(1)  # [N, classes, H, W]
    one_hot = functional.one_hot(masks, logits.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
    inter = (prob * one_hot).sum((0, 2, 3))
    total = prob.sum((0, 2, 3)) + one_hot.sum((0, 2, 3))
    dice = (2 * inter + 1.0) / (total + 1.0)
    return 1 - dice.mean()


@dataclass(frozen=True)
class LossWeights:
    dice: float = 1.0
    heat: float = 1.0
    size: float = 1.0
    offset: float = 1.0


def segmenter_loss(
    outputs: tuple[torch.Tensor, ...], scenes: Scenes, targets: CentreTargets, weights: LossWeights
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts (floats, for the curves)."""
    logits, heat, size, offset = outputs
    ce = functional.cross_entropy(logits, scenes.masks)
    dice = dice_loss(logits, scenes.masks)
    focal = focal_loss(heat, targets.heat)
    at = (targets.scene, slice(None), targets.cell_y, targets.cell_x)
    if len(targets.scene):
        size_l1 = functional.l1_loss(size[at], targets.size)
        offset_l1 = functional.l1_loss(offset[at], targets.offset)
    else:
        size_l1 = offset_l1 = size.sum() * 0.0
    total = ce + weights.dice * dice + weights.heat * focal + weights.size * size_l1 + weights.offset * offset_l1
    parts = {"ce": ce.item(), "dice": dice.item(), "focal": focal.item(), "size": size_l1.item(),
             "offset": offset_l1.item()}  # fmt: skip
    return total, parts
