"""contracts.imaging, the one recipe the server, the SDK and training share: orientation, bit depth, layouts, hints."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnserve.contracts.imaging import (
    NORMALISED_RANGE,
    PALETTE,
    Preprocessing,
    as_displayed,
    is_image_file,
    overlay,
    palette_colours,
    palette_png,
    png,
    range_parameter,
    read_image,
    to_uint8,
)
from cnnserve.contracts.scores import softmax

GREY_4 = Preprocessing(height=4, width=4, channels=1, scale=1 / 255, mean=(0.0,), std=(1.0,))


def jpeg_with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", exif=exif, quality=100)
    return buffer.getvalue()


def test_exif_orientation_is_applied() -> None:
    """Orientation 6: the viewer turns the stored pixels 90 degrees clockwise; the model must see them turned."""
    stored = np.zeros((8, 16), np.uint8)
    stored[:, :4] = 255  # a bright band on the left of the stored (landscape) pixels
    shown = np.asarray(as_displayed(Image.open(io.BytesIO(jpeg_with_orientation(stored, 6)))))
    assert shown.shape == (16, 8)  # portrait once turned
    assert shown[:4].mean() > 200 and shown[-4:].mean() < 50  # the band is now on top


def test_read_image_turns_a_file_as_displayed_and_closes_it(tmp_path: Path) -> None:
    """Every folder reader (training sets, style content, calibration) goes through read_image: same orientation."""
    stored = np.zeros((8, 16), np.uint8)
    stored[:, :4] = 255
    path = tmp_path / "photo.JPG"
    path.write_bytes(jpeg_with_orientation(stored, 6))
    shown = read_image(path, "RGB")
    assert shown.mode == "RGB" and shown.size == (8, 16)
    assert np.asarray(shown)[:4].mean() > 200
    path.unlink()  # the file was read and closed: the image stays usable
    assert np.asarray(shown).shape == (16, 8, 3)


def test_image_files_are_known_by_suffix_in_any_case(tmp_path: Path) -> None:
    for name in ("a.PNG", "b.jpeg", "c.webp", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()
    assert sorted(p.name for p in tmp_path.iterdir() if is_image_file(p)) == ["a.PNG", "b.jpeg", "c.webp"]


def test_softmax_rows_sum_to_one_without_overflow_and_keep_their_float_type() -> None:
    probabilities = softmax(np.array([[1000.0, 0.0], [0.0, 0.0]], np.float32), axis=1)
    np.testing.assert_allclose(probabilities, [[1.0, 0.0], [0.5, 0.5]])
    assert probabilities.dtype == np.float32
    assert softmax(np.array([1, 1])).dtype == np.float64


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    pixels = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369  # 0 .. 65535
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    opened = Image.open(io.BytesIO(buffer.getvalue()))
    assert opened.mode.startswith("I")
    tensor = GREY_4.tensor(opened)
    np.testing.assert_allclose(tensor[0], pixels / 65535, atol=1 / 255)


def test_layouts_and_normalisation() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    nchw = Preprocessing(height=4, width=4, channels=3, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    nhwc = Preprocessing(height=4, width=4, channels=3, layout="NHWC", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    expected = (rgb / 255 - 0.5) / 0.5
    np.testing.assert_allclose(nhwc.tensor(Image.fromarray(rgb)), expected, atol=1e-6)
    np.testing.assert_allclose(nchw.tensor(Image.fromarray(rgb)), expected.transpose(2, 0, 1), atol=1e-6)
    assert nchw.item_shape == (3, 4, 4) and nhwc.item_shape == (4, 4, 3)


def test_pixel_hints_make_0_1_and_say_so() -> None:
    """The hints training writes since the pixel contract: no mean/std, so the tensor is the pixels / 255."""
    hints = {"height": 2, "width": 2, "channels": 1, "layout": "NCHW", "scale": 1 / 255}
    grey = np.array([[0, 51], [204, 255]], dtype=np.uint8)
    recipe = Preprocessing.from_hints(hints)
    np.testing.assert_allclose(recipe.tensor(Image.fromarray(grey)), (grey / 255)[None], atol=1e-7)
    assert not recipe.normalised and range_parameter(recipe.value_range) == "0,1"
    assert range_parameter(Preprocessing.from_hints({**hints, "scale": 1}).value_range) == "0,255"


def test_a_recipe_with_mean_and_std_says_it_is_not_pixels() -> None:
    old = Preprocessing.from_hints({"height": 2, "width": 2, "mean": [0.5], "std": [0.25]})
    assert old.normalised and old.value_range is None
    assert range_parameter(old.value_range) == NORMALISED_RANGE
    assert Preprocessing.from_hints({"height": 2, "width": 2, "mean": [0], "std": [1]}).value_range == (0.0, 1.0)
    assert range_parameter((-1.0, 1.0)) == "-1,1"


@pytest.mark.parametrize(
    ("hints", "words"),
    [
        ({"width": 4}, "key 'height' is missing"),
        ({"height": 4, "width": 4, "channels": 2}, "channels must be 1 or 3"),
        ({"height": 4, "width": 4, "layout": "CHW"}, "layout must be one of NCHW, NHWC"),
        ({"height": 4, "width": 4, "mean": [0.1, 0.2]}, "mean needs one value per channel"),
        ({"height": 0, "width": 4}, "height and width must be >= 1"),
    ],
)
def test_hints_are_checked(hints: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Preprocessing.from_hints(hints)


def test_generator_output_to_png_round_trips() -> None:
    batch = np.linspace(-1, 1, 2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    images = to_uint8(batch)
    assert images.shape == (2, 2, 2, 3) and images.min() == 0 and images.max() == 255
    decoded = np.asarray(Image.open(io.BytesIO(png(images[1]))))
    np.testing.assert_array_equal(decoded, images[1])
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        png(np.zeros((2, 2, 2), np.uint8))


# --- resize "pad" and the mask palette ---------------------------------------------------------------------------

PAD_8 = Preprocessing.from_hints({"resize": "pad", "stride": 8, "channels": 1, "scale": 1 / 255})


def test_stretch_is_bit_for_bit_the_resize_it_always_was() -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (13, 9, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    grey = np.asarray(image.convert("L").resize((4, 4), Image.Resampling.BILINEAR), dtype=np.float32)
    expected = (grey * np.float32(1 / 255) - np.float32(0.0)) / np.float32(1.0)
    assert GREY_4.tensor(image).tobytes() == expected[None].tobytes()
    stretched = Preprocessing.from_hints({"height": 4, "width": 4, "resize": "stretch"})
    assert stretched.tensor(image).tobytes() == GREY_4.tensor(image).tobytes()


def test_pad_keeps_pixels_and_pads_bottom_right_with_zero_to_the_stride() -> None:
    pixels = np.random.default_rng(4).integers(0, 256, (70, 45), dtype=np.uint8)
    tensor = PAD_8.tensor(Image.fromarray(pixels))
    assert PAD_8.item_shape == (1, -1, -1) and tensor.shape == (1, 72, 48)
    np.testing.assert_array_equal(tensor[0, :70, :45], pixels.astype(np.float32) * np.float32(1 / 255))
    assert not tensor[0, 70:].any() and not tensor[0, :, 45:].any()
    assert PAD_8.tensor(Image.fromarray(pixels[:64, :40])).shape == (1, 64, 40)  # multiples stay as they are


@pytest.mark.parametrize("hints", [
    {"resize": "pad", "stride": 8, "height": 8, "width": 8},  # pad keeps each image's size
    {"resize": "pad", "stride": 0},
    {"resize": "crop", "height": 4, "width": 4},
    {"resize": "stretch"},  # stretch needs a size
])  # fmt: skip
def test_bad_resize_hints_are_refused(hints: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Preprocessing.from_hints(hints)


def test_palette_png_holds_the_indices_and_shows_the_palette() -> None:
    assert PALETTE[0].tolist() == [0, 0, 0] and len({tuple(c) for c in PALETTE[1:11].tolist()}) == 10
    assert PALETTE[11].tolist() == PALETTE[1].tolist()  # past 10 the colours cycle
    mask = np.arange(24, dtype=np.uint8).reshape(4, 6)
    opened = Image.open(io.BytesIO(palette_png(mask)))
    assert opened.mode == "P"
    np.testing.assert_array_equal(np.asarray(opened), mask)
    np.testing.assert_array_equal(np.asarray(opened.convert("RGB")), palette_colours(mask))


def test_overlay_blends_only_where_the_mask_is_not_background() -> None:
    mask = np.array([[0, 1], [2, 0]], np.uint8)
    grey = np.array([[10, 20], [30, 40]], np.uint8)
    blended = overlay(mask, grey, 0.25)
    assert blended.shape == (2, 2, 3) and blended.dtype == np.uint8
    assert blended[0, 0].tolist() == [10, 10, 10] and blended[1, 1].tolist() == [40, 40, 40]
    np.testing.assert_array_equal(blended[0, 1], np.round(0.75 * 20 + 0.25 * PALETTE[1].astype(np.float32)))
    np.testing.assert_array_equal(overlay(mask, grey, 1.0)[1, 0], PALETTE[2])
    with pytest.raises(ValueError):
        overlay(mask, grey, 0.0)
