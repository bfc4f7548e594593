"""The default style image, painted procedurally (nothing is downloaded): thick, short brush strokes that follow a
swirling flow field, in a bold night-sky palette. Seeded, so every run paints the same picture."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# deep blues, a teal, warm yellows and an orange: strong colour contrast, which a Gram loss carries well
PALETTE = ((18, 32, 92), (30, 70, 160), (70, 130, 200), (40, 140, 140), (240, 200, 60), (250, 235, 140),
           (230, 120, 40), (12, 18, 40))  # fmt: skip
WEIGHTS = (0.2, 0.22, 0.14, 0.1, 0.12, 0.08, 0.06, 0.08)  # how often each colour is picked


def brushstrokes(size: int = 256, seed: int = 7, strokes: int = 900) -> Image.Image:
    """A size x size RGB painting of `strokes` strokes; each follows the field's direction for a few steps."""
    rng = np.random.default_rng(seed)
    canvas = Image.new("RGB", (size, size), PALETTE[0])
    pen = ImageDraw.Draw(canvas)
    phases = rng.uniform(0, 2 * math.pi, 4)
    scale = 2 * math.pi / size

    def angle(x: float, y: float) -> float:  # a smooth swirl: a few large sinusoids of position
        return (math.sin(x * scale * 1.5 + phases[0]) * 2.0 + math.cos(y * scale * 2.0 + phases[1]) * 2.0
                + math.sin((x + y) * scale * 0.7 + phases[2]))  # fmt: skip

    for _ in range(strokes):
        x, y = rng.uniform(0, size, 2)
        base = np.asarray(PALETTE[rng.choice(len(PALETTE), p=WEIGHTS)], dtype=np.float64)
        colour = tuple(int(v) for v in np.clip(base + rng.normal(0, 14, 3), 0, 255))
        width = int(rng.integers(3, 8))
        points = [(x, y)]
        for _ in range(int(rng.integers(4, 10))):
            a = angle(x, y)
            x, y = x + 3.0 * math.cos(a), y + 3.0 * math.sin(a)
            points.append((x, y))
        pen.line(points, fill=colour, width=width, joint="curve")
    return canvas.filter(ImageFilter.SMOOTH)


def style_pixels(image: Image.Image) -> np.ndarray:
    """An RGB image -> uint8 [H, W, 3]."""
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
