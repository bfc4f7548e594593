"""Content photos for style training, all offline: the real photos scikit-learn and scikit-image ship, split once
into photos to train on and photos the report judges (never trained on), or the images of a user's folder; and the
random crops, scales and flips a training batch is drawn from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

from cnnserve.contracts.imaging import IMAGE_SUFFIXES, is_image_file, read_image


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(name), dtype=np.uint8)

    return load


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        found = getattr(data, name)()
        return np.asarray(found[0] if isinstance(found, tuple) else found, dtype=np.uint8)  # stereo: the left

    return load


# Colour photos, each in one list only: the judged ones are never trained on (a cat, a temple, a flower: subjects
# and palettes the training photos do not have).
TRAIN_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"), "coffee": _skimage("coffee"), "rocket": _skimage("rocket"),
    "motorcycle": _skimage("stereo_motorcycle"),
}  # fmt: skip
HELD_OUT_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "chelsea": _skimage("chelsea"), "china": _sklearn("china.jpg"), "flower": _sklearn("flower.jpg"),
}  # fmt: skip


def load_bundled(names: Sequence[str], table: dict[str, Callable[[], np.ndarray]]) -> list[np.ndarray]:
    """uint8 RGB [H, W, 3] photos by name."""
    return [table[name]() for name in names]


def load_folder(folder: Path) -> list[np.ndarray]:
    """Every PNG / JPEG under `folder`, as RGB uint8 [H, W, 3], in path order."""
    if not folder.is_dir():
        raise FileNotFoundError(f"--content {folder}: not a folder (or say 'bundled')")
    paths = sorted(p for p in folder.rglob("*") if is_image_file(p))
    if not paths:
        raise ValueError(f"--content {folder}: no images in it ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return [np.asarray(read_image(p, "RGB"), dtype=np.uint8) for p in paths]


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [1, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0  # a copy: writable


def fit_short_side(image: torch.Tensor, side: int) -> torch.Tensor:
    """[1, 3, H, W] resized (antialiased) so that its shorter side is `side`."""
    h, w = image.shape[-2:]
    scale = side / min(h, w)
    size = (max(side, round(h * scale)), max(side, round(w * scale)))
    return functional.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)


@dataclass
class ContentCrops:
    """Random square crops of `crop` pixels from each photo at a few scales (a pyramid built once, so a batch costs
    only indexing), flipped left-right half the time."""

    photos: list[np.ndarray]
    crop: int = 128
    scales: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0)  # the photo's shorter side as a multiple of the crop

    def __post_init__(self) -> None:
        self.pyramid = [fit_short_side(to_tensor(p), round(self.crop * s)) for p in self.photos for s in self.scales]

    def sample(self, n: int, rng: torch.Generator) -> torch.Tensor:
        """[n, 3, crop, crop] in [0, 1]."""
        picks = torch.randint(len(self.pyramid), (n,), generator=rng).tolist()
        out = torch.empty(n, 3, self.crop, self.crop)
        for i, k in enumerate(picks):
            image = self.pyramid[k]
            h, w = image.shape[-2:]
            y = int(torch.randint(h - self.crop + 1, (1,), generator=rng))
            x = int(torch.randint(w - self.crop + 1, (1,), generator=rng))
            patch = image[0, :, y : y + self.crop, x : x + self.crop]
            out[i] = patch.flip(-1) if float(torch.rand(1, generator=rng)) < 0.5 else patch
        return out
