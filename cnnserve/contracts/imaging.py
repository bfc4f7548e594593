"""The one definition of how an image becomes a model's input tensor, and a generator's tensor an image.

Shared by the server (image inputs, PNG outputs) and the client SDK, so an image sent as a file and an image turned
into a tensor by the client reach the model as the same numbers. Needs numpy and Pillow only.

The pixel contract: models cnnserve exports take pixels (scale 1/255: [0, 1]) and normalise inside their graph, and
generators answer [0, 1]. Mean/std stay part of the recipe for models from elsewhere and for models published before
that contract; `value_range` says which kind a recipe makes, for the config parameters `input_range` and
`output_range` (`range_parameter`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

LAYOUTS = ("NCHW", "NHWC")
MODES = {1: "L", 3: "RGB"}  # channels -> the Pillow mode an image is converted to
PNG_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # how Pillow opens 16-bit grey PNGs


@dataclass(frozen=True)
class Preprocessing:
    """A classifier's input recipe, as published in its config's `preprocessing` block."""

    height: int
    width: int
    channels: int = 1
    """1: images are converted to grey ("L"); 3: to RGB."""
    layout: str = "NCHW"
    """NCHW: one item is [channels, height, width]; NHWC: [height, width, channels]."""
    scale: float = 1 / 255
    """Applied to 0..255 pixels before mean/std."""
    mean: tuple[float, ...] = (0.0,)
    """Per channel; 0 (and std 1) for models that take pixels, which is what cnnserve exports."""
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"height and width must be >= 1, got {self.height}x{self.width}")
        if self.channels not in MODES:
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        for key, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != self.channels:
                raise ValueError(f"{key} needs one value per channel ({self.channels}), got {list(values)}")
        if any(s == 0 for s in self.std):
            raise ValueError(f"std values must not be 0, got {list(self.std)}")

    @classmethod
    def from_hints(cls, hints: Mapping[str, Any]) -> Preprocessing:
        """From a config's `preprocessing` mapping; ValueError names the key that is missing or wrong."""
        try:
            channels = int(hints.get("channels", 1))
            return cls(
                height=int(hints["height"]),
                width=int(hints["width"]),
                channels=channels,
                layout=str(hints.get("layout", "NCHW")),
                scale=float(hints.get("scale", 1 / 255)),
                mean=tuple(float(v) for v in hints.get("mean", [0.0] * channels)),
                std=tuple(float(v) for v in hints.get("std", [1.0] * channels)),
            )
        except KeyError as err:
            raise ValueError(f"key {err.args[0]!r} is missing") from None
        except (TypeError, ValueError) as err:
            raise ValueError(str(err)) from None

    @property
    def normalised(self) -> bool:
        """Whether mean/std change the scaled pixels, so that the tensor is no longer pixels."""
        return any(m != 0.0 for m in self.mean) or any(s != 1.0 for s in self.std)

    @property
    def value_range(self) -> tuple[float, float] | None:
        """The range of the values `tensor` makes from 8-bit images, (0, 255 * scale): (0, 1) for the default scale;
        None when mean/std normalise them (each channel then has its own range, and it is not pixels)."""
        if self.normalised:
            return None
        return 0.0, 255.0 * self.scale

    @property
    def item_shape(self) -> tuple[int, int, int]:
        if self.layout == "NCHW":
            return (self.channels, self.height, self.width)
        return (self.height, self.width, self.channels)

    def tensor(self, image: Image.Image) -> npt.NDArray[np.float32]:
        """One image -> FP32 item in the model's layout, preprocessed the way the model was trained."""
        converted = as_displayed(image).convert(MODES[self.channels])
        converted = converted.resize((self.width, self.height), Image.Resampling.BILINEAR)
        pixels = np.asarray(converted, dtype=np.float32).reshape(self.height, self.width, self.channels)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        pixels = (pixels * np.float32(self.scale) - mean) / std
        if self.layout == "NCHW":
            pixels = pixels.transpose(2, 0, 1)
        return np.ascontiguousarray(pixels, dtype=np.float32)


NORMALISED_RANGE = "normalised: (pixel * scale - mean) / std per channel, see preprocessing; not pixels"
"""`input_range` of a model whose recipe normalises (`Preprocessing.value_range` None): deliberately not "low,high",
so that a client which parses the parameter as numbers fails instead of sending pixels."""


def range_parameter(value_range: Sequence[float] | None) -> str:
    """A value range as the config parameters `input_range` / `output_range` state it: "low,high" ("0,1"), or
    NORMALISED_RANGE for None."""
    if value_range is None:
        return NORMALISED_RANGE
    low, high = (round(float(v), 6) for v in value_range)  # 255 * (1/255) is 1.0000000000000002
    return f"{low:g},{high:g}"


def as_displayed(image: Image.Image) -> Image.Image:
    """The image as a viewer shows it, in 8 bits: turned by its EXIF orientation (phone photos store the rotation
    there instead of in the pixels), and 16-bit grey scaled to 0..255 (Pillow's own conversion clips it to white)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT_MODES:
        pixels = np.asarray(image, dtype=np.float64) / 257.0  # 65535 -> 255
        image = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))
    return image


def to_uint8(batch: npt.NDArray[Any], value_range: Sequence[float] = (-1.0, 1.0)) -> npt.NDArray[np.uint8]:
    """Generator output [n, c, h, w] in value_range -> uint8 images [n, h, w, c]."""
    low, high = float(value_range[0]), float(value_range[1])
    if not high > low:
        raise ValueError(f"value range must rise, got {list(value_range)}")
    scaled = (np.clip(batch, low, high) - low) / (high - low) * 255.0
    pixels: npt.NDArray[np.uint8] = np.round(scaled).astype(np.uint8).transpose(0, 2, 3, 1)
    return pixels


def png(image: npt.NDArray[np.uint8]) -> bytes:
    """One uint8 image [h, w, c] with c in 1, 3, 4 -> the bytes of a PNG file."""
    channels = image.shape[-1]
    if channels not in PNG_MODES:
        raise ValueError(f"a PNG holds 1, 3 or 4 channels, got {channels}")
    picture = Image.fromarray(image[..., 0] if channels == 1 else image)  # mode follows the shape: L, RGB, RGBA
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
