"""Encoded images on the wire, beyond what Triton offers without an ensemble.

In: a model whose config's `preprocessing` says `"input_format": "image"` also takes PNG/JPEG files as a BYTES
tensor [n] (or [n, 1]) for that input; each file is decoded, converted, resized (or padded, `"resize": "pad"`: the
files of one request then share one size) and scaled the way the client SDK does it (contracts/imaging.py), and
the model sees its usual FP32 tensor: [0, 1] pixels for models cnnserve exports
(they normalise in their graph), with the config's mean/std applied for models that declare them (brought from
elsewhere, or published before the pixel contract). Decoding is bounded: only PNG and JPEG, the
pixel count read from the header (against the model's own cap, then the server's) and a JPEG's scans counted before
anything is decoded, and a corrupt file refused naming its item.

Out: an image output (config `postprocessing.output`) comes back as PNG files when a request asks for them
(contracts/wire.py); a model kind may send its own pictures through the same pool (`run`).

Pillow releases the GIL while it decodes and encodes, so the work runs in a small thread pool, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from cnnserve.contracts import imaging
from cnnserve.contracts.datatypes import DATATYPES
from cnnserve.service.errors import InvalidInput, ModelLoadError, QueueFull
from cnnserve.service.types import ImageInput, ImageOutput, TensorSpec

Result = TypeVar("Result")
FORMATS = ("PNG", "JPEG")
FLOAT_DATATYPES = ("FP16", "FP32", "FP64")
PNG_CHANNELS = (1, 3, 4)
JPEG_MARKER = re.compile(rb"\xff[^\x00\xff]")
"""A JPEG marker: 0xFF and its code. Entropy-coded data stuffs every 0xFF byte as FF 00 and fill bytes are 0xFF, so
outside segment payloads (skipped by their lengths) this finds the markers libjpeg finds."""
JPEG_SOS, JPEG_EOI = 0xDA, 0xD9
JPEG_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})  # TEM, SOI, RST0-7: markers with no length after them


# --- configuration, checked when a model loads ------------------------------------------------------------------


def image_input(
    config_path: Path, preprocessing: Mapping[str, Any], inputs: Sequence[TensorSpec], max_batch_size: int
) -> ImageInput | None:
    """The input that takes encoded images, or None when the config asks for none; a recipe that cannot feed the
    graph's input is refused naming the mismatch."""
    input_format = preprocessing.get("input_format", "tensor")
    if input_format == "tensor":
        return None
    if input_format != "image":
        raise ModelLoadError(
            f'{config_path}: key \'preprocessing.input_format\' must be "image" or "tensor", got {input_format!r}'
        )
    name = preprocessing.get("input", inputs[0].name if len(inputs) == 1 else None)
    tensor = next((t for t in inputs if t.name == name), None)
    if tensor is None:
        names = ", ".join(t.name for t in inputs)
        raise ModelLoadError(
            f"{config_path}: key 'preprocessing.input' must name the image input (inputs: {names}), got {name!r}"
        )
    try:
        recipe = imaging.Preprocessing.from_hints(preprocessing)
    except ValueError as err:
        raise ModelLoadError(f"{config_path}: key 'preprocessing': {err}") from None
    item = tensor.shape[1:] if max_batch_size > 0 else tensor.shape
    height_width = item[1:] if recipe.layout == "NCHW" else item[:2]
    if recipe.padded and (len(item) != 3 or tuple(height_width) != (-1, -1)):
        raise ModelLoadError(
            f"{config_path}: key 'preprocessing.resize' \"pad\" sends each image at its own size, so input "
            f"'{tensor.name}' needs variable (-1) height and width dims; it takes {list(tensor.shape)}"
        )
    fits = len(item) == 3 and all(want in (-1, got) for want, got in zip(item, recipe.item_shape, strict=True))
    if tensor.datatype not in FLOAT_DATATYPES or not fits:
        raise ModelLoadError(
            f"{config_path}: key 'preprocessing' makes {recipe.layout} items {list(recipe.item_shape)}, but input "
            f"'{tensor.name}' takes {tensor.datatype} {list(tensor.shape)}"
        )
    return ImageInput(tensor.name, recipe, tensor.datatype)


def image_output(
    config_path: Path, postprocessing: Mapping[str, Any], outputs: Sequence[TensorSpec], max_batch_size: int
) -> ImageOutput | None:
    """The output that may be sent as PNG files: floats [n, channels, height, width] with 1, 3 or 4 channels."""
    name = postprocessing.get("output")
    if name is None:
        return None
    tensor = next((t for t in outputs if t.name == name), None)
    if tensor is None:
        names = ", ".join(t.name for t in outputs)
        raise ModelLoadError(f"{config_path}: key 'postprocessing.output' names {name!r}, not an output ({names})")
    value_range = postprocessing.get("range", [-1.0, 1.0])
    if (
        not isinstance(value_range, list)
        or len(value_range) != 2
        or not all(isinstance(v, (int, float)) for v in value_range)
        or not value_range[1] > value_range[0]
    ):
        raise ModelLoadError(f"{config_path}: key 'postprocessing.range' must be [low, high], got {value_range!r}")
    item = tensor.shape[1:] if max_batch_size > 0 else tensor.shape
    if max_batch_size == 0 or tensor.datatype not in FLOAT_DATATYPES or len(item) != 3 or item[0] not in PNG_CHANNELS:
        return None  # a hint for clients only: the server cannot make PNG files of it
    return ImageOutput(tensor.name, (float(value_range[0]), float(value_range[1])))


# --- the work itself ------------------------------------------------------------------------------------------


class DecodedImages(NamedTuple):
    batch: npt.NDArray[Any]
    """The input's tensor [n, *item]."""
    size: tuple[int, int] | None
    """(height, width) of the files before padding; None when the recipe does not pad."""
    pixels: list[npt.NDArray[np.uint8]]
    """When asked for: each item's uint8 pixels [h, w, c] before scaling and padding (to draw over)."""


class PixelCap(NamedTuple):
    """The most pixels (width x height) one file sent to a model may have: the model's own cap (its config's
    `preprocessing.max_pixels`) under the server's max_image_pixels, the ceiling for every model."""

    model: str
    server: int
    own: int | None

    def check(self, name: str, index: int, width: int, height: int) -> None:
        """InvalidInput naming the item, its size and the cap it is over; the model's first, the smaller where set."""
        if self.own is not None and width * height > self.own:
            raise InvalidInput(
                f"input {name!r} item {index}: {width}x{height} pixels is more than model {self.model!r} accepts "
                f"(max_pixels {self.own} in its config); send a smaller image"
            )
        if width * height > self.server:
            raise InvalidInput(
                f"input {name!r} item {index}: {width}x{height} pixels is more than max_image_pixels {self.server}; "
                "send a smaller image"
            )


def decode(files: npt.NDArray[Any], target: ImageInput, cap: PixelCap, max_jpeg_scans: int, keep_pixels: bool = False
           ) -> DecodedImages:  # fmt: skip
    """Encoded files (object array of bytes) -> the input's tensor. InvalidInput names the item."""
    recipe = target.preprocessing
    batch: npt.NDArray[Any] | None = None
    first: tuple[int, int] = (0, 0)
    kept = []
    for index, data in enumerate(files):
        pixels = recipe.pixels(_open(target.name, index, data, cap, max_jpeg_scans))
        size = (pixels.shape[0], pixels.shape[1])
        if index == 0:
            first = size
        elif size != first:  # padded items keep their own sizes, and one tensor holds one size
            raise InvalidInput(
                f"input {target.name!r}: item {index} is {size[1]}x{size[0]} pixels but item 0 is "
                f"{first[1]}x{first[0]}; files of one request must share one size: send them as separate requests"
            )
        item = recipe.tensor_of_pixels(pixels)
        if batch is None:
            batch = np.empty((len(files), *item.shape), dtype=DATATYPES[target.datatype].numpy)
        batch[index] = item
        if keep_pixels:
            kept.append(pixels)
    assert batch is not None  # decode_inputs takes 1..max_batch_size files
    return DecodedImages(batch, first if recipe.padded else None, kept)


def _open(name: str, index: int, data: bytes, cap: PixelCap, max_jpeg_scans: int) -> Image.Image:
    where = f"input {name!r} item {index}"
    kind = "image"
    # No warnings.catch_warnings here: it swaps process-wide state and this runs on several threads. Pillow's own
    # bomb check raises past twice its limit (2 x 89 M pixels) and only warns below; our header check, at
    # max_image_pixels (16.7 M by default), refuses first.
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
        kind = image.format or kind
        cap.check(name, index, *image.size)
        if kind == "JPEG":
            scans = jpeg_scans(data)
            if scans > max_jpeg_scans:
                raise InvalidInput(
                    f"{where}: JPEG with {scans} scans is more than max_jpeg_scans {max_jpeg_scans}; send a baseline "
                    "or ordinarily progressive JPEG"
                )
        image.load()
    except InvalidInput:
        raise
    except Image.DecompressionBombError:
        raise InvalidInput(f"{where}: refused as a decompression bomb; send a smaller image") from None
    except UnidentifiedImageError:
        raise InvalidInput(f"{where}: not a PNG or JPEG file ({len(data)} bytes)") from None
    except (OSError, ValueError, SyntaxError) as err:  # Pillow's words for cut-short and corrupt files
        raise InvalidInput(f"{where}: corrupt {kind} file: {err}") from None
    return image


def jpeg_scans(data: bytes) -> int:
    """The scans (SOS segments) of a JPEG up to its end (EOI), found by walking its marker segments as libjpeg reads
    them: payloads skipped by their lengths (so an APPn or COM segment, or the EXIF thumbnail's own scans, never
    count), entropy-coded data up to the next marker. Nothing is decoded: about 2 ms for a 5 MB file."""
    scans = 0
    position = 2  # past SOI
    while (marker := JPEG_MARKER.search(data, position)) is not None:
        code = data[marker.start() + 1]
        if code == JPEG_EOI:
            break
        position = marker.end()
        if code in JPEG_STANDALONE:
            continue
        if code == JPEG_SOS:
            scans += 1
        position += int.from_bytes(data[position : position + 2], "big")  # the length counts its own two bytes
    return scans


def header_sizes(files: npt.NDArray[Any]) -> list[tuple[int, int]]:
    """(height, width) of each file, read from its header alone: what decoding it would make, before anything is."""
    sizes = []
    for data in files:
        try:
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                width, height = image.size
        except Exception:  # decode() names what is wrong with it, as it always has
            width = height = 0
        sizes.append((height, width))
    return sizes


def encode_png(images: npt.NDArray[Any], target: ImageOutput) -> npt.NDArray[Any]:
    """Generator output [n, c, h, w] -> object array [n] of PNG files."""
    pixels = imaging.to_uint8(np.asarray(images, dtype=np.float32), target.value_range)
    files = np.empty(len(pixels), dtype=object)
    for index, image in enumerate(pixels):
        files[index] = imaging.png(image)
    return files


MAX_WAITING_JOBS = 256
"""Image jobs (a request's files, or one reply's pictures) waiting for a free thread at most; the next is refused at
once (RESOURCE_EXHAUSTED / 429) rather than let the pool's queue, and the bytes it holds, grow without bound."""


class ImageWorkers:
    """A small thread pool for Pillow, so decoding never stalls the event loop that serves every other call; its
    queue is bounded (MAX_WAITING_JOBS beyond the threads)."""

    def __init__(self, max_pixels: int, max_jpeg_scans: int, threads: int | None = None,
                 max_waiting: int = MAX_WAITING_JOBS) -> None:  # fmt: skip
        """`max_pixels`, `max_jpeg_scans`: the server's bounds on any file (Settings.max_image_pixels and
        max_jpeg_scans)."""
        self.max_pixels = max_pixels
        self.max_jpeg_scans = max_jpeg_scans
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.max_jobs = self.threads + max_waiting
        self.jobs = 0
        """Jobs submitted and not yet finished (running or waiting); read and written on the event loop only."""
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="images")

    async def decode(self, files: npt.NDArray[Any], target: ImageInput, model: str, keep_pixels: bool = False
                     ) -> DecodedImages:  # fmt: skip
        """`model`: the name the model's own pixel cap is refused under."""
        cap = PixelCap(model, self.max_pixels, target.preprocessing.max_pixels)
        return await self.run(decode, files, target, cap, self.max_jpeg_scans, keep_pixels)

    async def encode_png(self, images: npt.NDArray[Any], target: ImageOutput) -> npt.NDArray[Any]:
        return await self.run(encode_png, images, target)

    async def run(self, work: Callable[..., Result], *args: Any) -> Result:
        """Any image work on the pool; QueueFull at once when MAX_WAITING_JOBS already wait."""
        if self.jobs >= self.max_jobs:
            raise QueueFull(
                f"image decoding is busy: {self.jobs - self.threads} jobs wait for its {self.threads} threads; "
                "retry shortly"
            )
        loop = asyncio.get_running_loop()
        job = self._pool.submit(work, *args)
        self.jobs += 1

        def done(_: object) -> None:  # counted until the thread is done with it, even if its caller went away
            with contextlib.suppress(RuntimeError):  # the loop closed first: nobody counts any more
                loop.call_soon_threadsafe(self._finished)

        job.add_done_callback(done)
        return await asyncio.wrap_future(job)

    def _finished(self) -> None:
        self.jobs -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
