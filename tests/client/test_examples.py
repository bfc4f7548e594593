"""The README's example digits are what their names say: real scikit-learn digits of that class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "digits"


def test_each_example_is_a_real_digit_of_its_name() -> None:
    digits = load_digits()
    scaled = np.round(digits.images / 16 * 255).astype(np.uint8)  # 0..16 -> 0..255, as the files were written
    for digit in range(10):
        pixels = np.asarray(Image.open(EXAMPLES / f"{digit}.png"))
        matches = np.flatnonzero((scaled == pixels).all(axis=(1, 2)))
        assert matches.size and set(digits.target[matches]) == {digit}, digit
