"""The one definition of how an image becomes a model's input tensor, and a generator's tensor an image.

Shared by the server (image inputs, PNG outputs) and the client SDK, so an image sent as a file and an image turned
into a tensor by the client reach the model as the same numbers. Needs numpy and Pillow only.

The pixel contract: models cnnserve exports take pixels (scale 1/255: [0, 1]) and normalise inside their graph, and
generators answer [0, 1]. Mean/std stay part of the recipe for models from elsewhere and for models published before
that contract; `value_range` says which kind a recipe makes, for the config parameters `input_range` and
`output_range` (`range_parameter`).

Sizes: `"resize": "stretch"` (the default) resamples every image to height x width; `"resize": "pad"` keeps the
image's own pixels and pads them bottom/right with 0 up to the next multiple of `stride` (segmenters, whose answers
are per pixel of the image sent). Masks: one palette (PALETTE) colours class-index masks for PNG files and overlays.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

LAYOUTS = ("NCHW", "NHWC")
RESIZES = ("stretch", "pad")
MODES = {1: "L", 3: "RGB"}  # channels -> the Pillow mode an image is converted to
PNG_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # how Pillow opens 16-bit grey PNGs
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
"""Which files in a folder are images, wherever a folder is read (training sets, style content, calibration)."""


@dataclass(frozen=True)
class Preprocessing:
    """A model's input recipe, as published in its config's `preprocessing` block."""

    height: int | None
    """Absent (None) only with resize "pad": each image keeps its own size."""
    width: int | None
    channels: int = 1
    """1: images are converted to grey ("L"); 3: to RGB."""
    layout: str = "NCHW"
    """NCHW: one item is [channels, height, width]; NHWC: [height, width, channels]."""
    scale: float = 1 / 255
    """Applied to 0..255 pixels before mean/std."""
    mean: tuple[float, ...] = (0.0,)
    """Per channel; 0 (and std 1) for models that take pixels, which is what cnnserve exports."""
    std: tuple[float, ...] = (1.0,)
    resize: str = "stretch"
    """stretch: bilinear to height x width; pad: no resampling, 0 padding bottom/right to a multiple of stride."""
    stride: int = 1
    """With resize "pad": the padded height and width are multiples of it."""
    max_pixels: int | None = None
    """Most pixels (width x height) one file may have; the server refuses a larger one before decoding it. None: the
    server's own max_image_pixels alone (it bounds every model, this cap included). For models that take files at
    their own size (pad), where a file's size is what a request costs."""

    def __post_init__(self) -> None:
        if self.resize not in RESIZES:
            raise ValueError(f"resize must be one of {', '.join(RESIZES)}, got {self.resize!r}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.resize == "pad":
            if self.height is not None or self.width is not None:
                raise ValueError('resize "pad" keeps each image\'s own size: leave height and width out')
        elif self.height is None or self.width is None:
            raise ValueError('height and width are needed unless resize is "pad"')
        elif self.height < 1 or self.width < 1:
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
        if self.max_pixels is not None and (type(self.max_pixels) is not int or self.max_pixels < 1):
            raise ValueError(f"max_pixels must be a positive integer (width x height), got {self.max_pixels!r}")

    @classmethod
    def from_hints(cls, hints: Mapping[str, Any]) -> Preprocessing:
        """From a config's `preprocessing` mapping; ValueError names the key that is missing or wrong."""
        try:
            channels = int(hints.get("channels", 1))
            resize = str(hints.get("resize", "stretch"))
            sized = resize != "pad" or "height" in hints or "width" in hints  # pad refuses them in __post_init__
            return cls(
                height=int(hints["height"]) if sized else None,
                width=int(hints["width"]) if sized else None,
                channels=channels,
                layout=str(hints.get("layout", "NCHW")),
                scale=float(hints.get("scale", 1 / 255)),
                mean=tuple(float(v) for v in hints.get("mean", [0.0] * channels)),
                std=tuple(float(v) for v in hints.get("std", [1.0] * channels)),
                resize=resize,
                stride=int(hints.get("stride", 1)),
                max_pixels=hints.get("max_pixels"),  # not int(): 1.5 or "big" is refused, not rounded or read
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
    def padded(self) -> bool:
        return self.resize == "pad"

    @property
    def item_shape(self) -> tuple[int, int, int]:
        """One item's shape; -1 for height and width when each image keeps its own (resize "pad")."""
        height, width = self.height or -1, self.width or -1
        if self.layout == "NCHW":
            return (self.channels, height, width)
        return (height, width, self.channels)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The tensor's height and width for an image of height x width: the next multiples of stride (pad), or
        the recipe's own size (stretch)."""
        if not self.padded:
            assert self.height is not None and self.width is not None
            return self.height, self.width
        return -(-height // self.stride) * self.stride, -(-width // self.stride) * self.stride

    def pixels(self, image: Image.Image) -> npt.NDArray[np.uint8]:
        """The uint8 pixels [h, w, channels] the model sees before scaling: as displayed, converted, and resized
        (stretch) or at the image's own size (pad, before padding)."""
        converted = as_displayed(image).convert(MODES[self.channels])
        if not self.padded:
            assert self.height is not None and self.width is not None
            converted = converted.resize((self.width, self.height), Image.Resampling.BILINEAR)
        return np.asarray(converted, dtype=np.uint8).reshape(converted.height, converted.width, self.channels)

    def tensor(self, image: Image.Image) -> npt.NDArray[np.float32]:
        """One image -> FP32 item in the model's layout, preprocessed the way the model was trained."""
        return self.tensor_of_pixels(self.pixels(image))

    def tensor_of_pixels(self, pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """`pixels` (as `pixels` makes them) -> the FP32 item, scaled, normalised, then padded with 0 (pad)."""
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        values = (pixels.astype(np.float32) * np.float32(self.scale) - mean) / std
        height, width = pixels.shape[:2]
        padded_height, padded_width = self.padded_size(height, width)
        if (padded_height, padded_width) != (height, width):
            values = np.pad(values, ((0, padded_height - height), (0, padded_width - width), (0, 0)))
        if self.layout == "NCHW":
            values = values.transpose(2, 0, 1)
        return np.ascontiguousarray(values, dtype=np.float32)


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


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def read_image(path: Path | str, mode: str | None = None) -> Image.Image:
    """An image file as displayed (`as_displayed`), loaded and closed; converted to `mode` when given. Raises
    OSError for a file Pillow cannot read."""
    with Image.open(path) as opened:
        shown = as_displayed(opened)
        shown.load()  # exif_transpose may return the opened image itself: read it before the file closes
        return shown.convert(mode) if mode is not None else shown.copy()


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


# Mask colours: index 0 (background) black, 1..10 ten distinct colours (the tab10 palette), and every index past 10
# the colour of 1 + (index - 1) % 10, so any uint8 mask has a colour for each pixel.
_COLOURS = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
PALETTE: npt.NDArray[np.uint8] = np.array(
    [(0, 0, 0)] + [_COLOURS[(index - 1) % len(_COLOURS)] for index in range(1, 256)], dtype=np.uint8
)
"""[256, 3]: the RGB colour of each mask index."""
OVERLAY_ALPHA = 0.5
"""The palette's weight over the image when an overlay asks for no other."""


def _mask_indices(mask: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    array = np.asarray(mask)
    if array.ndim != 2 or array.dtype.kind not in "iub":
        raise ValueError(f"a mask is integers [h, w], got {array.dtype} {list(array.shape)}")
    if array.size and (int(array.min()) < 0 or int(array.max()) > 255):
        raise ValueError("mask indices must lie in 0..255")
    return array.astype(np.uint8, copy=False)


def palette_colours(mask: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """A class-index mask [h, w] -> RGB uint8 [h, w, 3] in PALETTE's colours."""
    colours: npt.NDArray[np.uint8] = PALETTE[_mask_indices(mask)]
    return colours


def palette_png(mask: npt.NDArray[Any]) -> bytes:
    """A class-index mask [h, w] -> a paletted PNG: viewers show PALETTE's colours, and the file's own pixel values
    are the indices (Pillow: np.asarray(Image.open(f)) is the mask; .convert("RGB") its colours)."""
    indices = np.ascontiguousarray(_mask_indices(mask))
    picture = Image.frombytes("P", (indices.shape[1], indices.shape[0]), indices.tobytes())
    picture.putpalette(PALETTE.reshape(-1).tolist())
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def overlay(mask: npt.NDArray[Any], image: npt.NDArray[np.uint8], alpha: float = OVERLAY_ALPHA
            ) -> npt.NDArray[np.uint8]:  # fmt: skip
    """The palette blended over `image` (uint8 [h, w], [h, w, 1] or [h, w, 3], the mask's size) -> RGB uint8
    [h, w, 3]: round((1 - alpha) * image + alpha * colour) where the mask is not background; background pixels
    keep the image's own."""
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
    indices = _mask_indices(mask)
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[..., np.newaxis]
    if pixels.shape[:2] != indices.shape or pixels.shape[2] not in (1, 3):
        raise ValueError(f"image {list(pixels.shape)} does not fit mask {list(indices.shape)}")
    rgb = np.broadcast_to(pixels, (*indices.shape, 3)).astype(np.float32)
    blended = (1.0 - alpha) * rgb + alpha * PALETTE[indices].astype(np.float32)
    result = np.where((indices > 0)[..., np.newaxis], np.round(blended), rgb)
    return result.astype(np.uint8)
