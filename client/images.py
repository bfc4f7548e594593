"""Image <-> tensor conversions driven by a model's preprocessing hints: size, channels, layout and scale, which make
[0, 1] pixels for models cnnserve exports, and mean/std for models that declare them (from elsewhere, or published
before the pixel contract)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cnnserve.contracts import imaging


def to_tensor(image: Image.Image, hints: Mapping[str, Any]) -> np.ndarray:
    """One image -> FP32 item in the model's layout, preprocessed the way the model was trained (the server's
    own recipe for image inputs: cnnserve.contracts.imaging)."""
    return imaging.Preprocessing.from_hints(hints).tensor(image)


ImageLike = Path | str | bytes | Image.Image | np.ndarray
"""What the SDK takes as an image: a file path, a file's bytes (PNG, JPEG, ...), a Pillow image, or uint8 pixels
[h, w] (grey) or [h, w, 3|4]."""


def open_image(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        return Image.fromarray(image)
    if isinstance(image, bytes):
        return Image.open(io.BytesIO(image))
    return Image.open(image)


def encoded(image: ImageLike) -> bytes:
    """The bytes of an image file: a path's contents and bytes as they are; pixels and Pillow images as PNG."""
    if isinstance(image, bytes):
        return image
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    buffer = io.BytesIO()
    open_image(image).save(buffer, format="PNG")
    return buffer.getvalue()


def load(images: Sequence[ImageLike], hints: Mapping[str, Any]) -> np.ndarray:
    """Images -> one FP32 batch in the model's layout, preprocessed by its hints."""
    return np.stack([to_tensor(open_image(image), hints) for image in images])


to_uint8 = imaging.to_uint8


def grid(images: np.ndarray, columns: int | None = None, pad: int = 2, upscale: int = 4) -> Image.Image:
    """uint8 images [n, h, w, c] -> one PNG-ready grid, upscaled so small digits are visible."""
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, c), dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[top : top + h, left : left + w] = image
    picture = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    return picture.resize((picture.width * upscale, picture.height * upscale), Image.Resampling.NEAREST)
