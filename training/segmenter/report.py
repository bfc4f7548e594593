"""The segmenter's report card, measured on held-out scenes through the graph that is exported: mIoU over all mask
classes, the share of true digits found (a predicted box of the right class with IoU >= 0.5), and the false-box
rate beside it; the same three on scenes of another recipe. Below the floors the model is refused, not published.
And the grid of test scenes beside their predicted masks and boxes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnserve.training.plots import save_grid
from cnnserve.training.report import BelowFloor, Check, check
from cnnserve.training.segmenter.model import ExportedSegmenter
from cnnserve.training.segmenter.scenes import Scenes

MIN_MIOU = 0.80  # held-out scenes of the main recipe, digits
MIN_FOUND = 0.90
MATCH_IOU = 0.5  # a predicted box finds a true digit at this IoU or more (and the same class)
EVAL_BATCH = 64


@dataclass(frozen=True)
class SceneScores:
    miou: float  # mean over classes of intersection / union of mask pixels, over all scenes together
    class_iou: list[float]  # per class, index 0 background
    found: float  # true boxes matched by a predicted box of their class at IoU >= MATCH_IOU, over all true boxes
    false_box_rate: float  # predicted boxes (score above threshold) matching no true box, over all predicted boxes
    true_boxes: int
    predicted_boxes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "miou": round(self.miou, 4), "found": round(self.found, 4),
            "false_box_rate": round(self.false_box_rate, 4), "true_boxes": self.true_boxes,
            "predicted_boxes": self.predicted_boxes, "class_iou": [round(v, 4) for v in self.class_iou],
        }  # fmt: skip


@torch.no_grad()
def predict(model: ExportedSegmenter, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(boxes, scores, classes, mask) of the served graph, in batches."""
    model.eval()
    device = next(model.parameters()).device
    parts = [[t.cpu() for t in model(images[i : i + EVAL_BATCH].to(device))[:4]]
             for i in range(0, len(images), EVAL_BATCH)]  # fmt: skip
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))


def score_scenes(model: ExportedSegmenter, scenes: Scenes, num_classes: int) -> SceneScores:
    boxes, scores, classes, mask = predict(model, scenes.images)
    confusion = torch.bincount(scenes.masks.reshape(-1) * num_classes + mask.reshape(-1).long(),
                               minlength=num_classes**2).reshape(num_classes, num_classes).double()  # fmt: skip
    inter = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - inter
    present = union > 0
    class_iou = torch.where(present, inter / union.clamp_min(1), torch.nan)
    found = predicted = 0
    for i in range(len(scenes)):
        true_boxes, true_classes = scenes.boxes_of(i)
        kept = scores[i] > 0
        hits = match(boxes[i][kept], classes[i][kept], true_boxes, true_classes)
        found += int(hits.sum())  # each hit used its own predicted box
        predicted += int(kept.sum())
    return SceneScores(
        miou=float(class_iou[present].mean()), class_iou=[float(v) for v in class_iou],
        found=found / max(len(scenes.boxes), 1), false_box_rate=(predicted - found) / max(predicted, 1),
        true_boxes=len(scenes.boxes), predicted_boxes=predicted,
    )  # fmt: skip


def match(pred_boxes: torch.Tensor, pred_classes: torch.Tensor, true_boxes: torch.Tensor,
          true_classes: torch.Tensor) -> np.ndarray:  # fmt: skip
    """Per true box, whether a predicted box of its class (each used once, best score first) has IoU >= MATCH_IOU."""
    hits = np.zeros(len(true_boxes), dtype=bool)
    if not len(pred_boxes) or not len(true_boxes):
        return hits
    iou = box_iou(pred_boxes, true_boxes).numpy()  # [P, T]
    iou[pred_classes.numpy()[:, None] != true_classes.numpy()[None, :]] = 0.0
    for p in range(len(pred_boxes)):  # predictions arrive best first
        candidates = np.where(hits, 0.0, iou[p])
        t = int(candidates.argmax())
        if candidates[t] >= MATCH_IOU:
            hits[t] = True
    return hits


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU [A, B] of boxes (x0, y0, x1, y1), x1 and y1 exclusive."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp_min(0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp_min(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp_min(0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp_min(1e-6)


def segmenter_checks(
    test: SceneScores, other: SceneScores | None, min_miou: float | None, min_found: float | None
) -> tuple[list[Check], dict[str, Any]]:
    """Floors on the main test scenes (None: not checked); the other recipe's figures are reported beside them."""
    checks = []
    if min_miou is not None:
        checks.append(check("test_miou", test.miou, min_miou))
    if min_found is not None:
        checks.append(check("test_digits_found", test.found, min_found))
    metrics: dict[str, Any] = {"test": test.as_dict()}
    if other is not None:
        metrics["other_recipe"] = other.as_dict()
    return checks, metrics


def refuse_below_floor(report: dict[str, Any]) -> None:
    """Raise BelowFloor when the card failed: a segmenter below its floors is never published."""
    if report["passed"] is False:
        failed = ", ".join(f"{c['name']} {c['value']:.4f} < {c['threshold']:.4f}" for c in report["checks"]
                           if not c["passed"])  # fmt: skip
        raise BelowFloor(
            f"model '{report['model']}': report card below its floor ({failed}); not published "
            "(lower --min-miou / --min-found to publish anyway)"
        )


# one colour per mask class (background black), cycled for folders with more classes
_PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]],
                    dtype=np.float32) / 255.0  # fmt: skip


def save_segmentation_grid(
    images: np.ndarray, masks: np.ndarray, boxes: np.ndarray, classes: np.ndarray, rows: int, path: Path,
    zoom: int = 3,
) -> None:  # fmt: skip
    """Scenes [N, 1, H, W] in [0, 1] beside their predicted masks [N, H, W] tinted by class, with the predicted
    boxes [N, K, 4] (x1/y1 exclusive; class 0 rows are padding) outlined in their class's colour on both."""
    n, _, h, w = images.shape
    tiles = np.zeros((n, 3, h, 2 * w + 1), dtype=np.float32)
    tiles[:, :, :, w] = 1.0  # a white line between scene and mask
    tiles[:, :, :, :w] = images[:, :1]
    tiles[:, :, :, w + 1 :] = _PALETTE[masks % len(_PALETTE)].transpose(0, 3, 1, 2)
    for i in range(n):
        for (x0, y0, x1, y1), c in zip(boxes[i].round().astype(int), classes[i], strict=True):
            if c == 0:
                continue
            colour = _PALETTE[c % len(_PALETTE)][:, None]
            x0, y0 = max(x0, 0), max(y0, 0)
            x1, y1 = min(max(x1 - 1, x0), w - 1), min(max(y1 - 1, y0), h - 1)  # the last pixel inside
            for left in (0, w + 1):
                tiles[i, :, y0 : y1 + 1, left + x0] = tiles[i, :, y0 : y1 + 1, left + x1] = colour
                tiles[i, :, y0, left + x0 : left + x1 + 1] = tiles[i, :, y1, left + x0 : left + x1 + 1] = colour
    save_grid(tiles, rows, path, zoom)
