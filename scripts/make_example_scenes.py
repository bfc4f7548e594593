"""Write examples/scenes/: a few held-out scenes for the README's segmenter walk-through, with their truth.

The scenes come from the test split (handwriting the default segmenter never trained on), seeded, so a test can
check that the committed files are exactly what this script makes. Run: python scripts/make_example_scenes.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnserve.training.segmenter.scenes import OTHER_RECIPE, TEST_RECIPE, SceneRecipe, Scenes, make_scenes, split_digits

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "scenes"
SEED = 2026
# (file stem, recipe, fewest digits): three scenes of the main recipe and one larger, fainter one of the other.
PICKS: tuple[tuple[str, SceneRecipe, int], ...] = (
    ("scene-a", TEST_RECIPE, 4),
    ("scene-b", TEST_RECIPE, 3),
    ("scene-c", TEST_RECIPE, 2),
    ("scene-wide", OTHER_RECIPE, 4),
)


def example_scenes() -> dict[str, tuple[np.ndarray, list[dict[str, object]]]]:
    """stem -> (uint8 pixels [H, W], truth: one {digit, box} per digit, box (x0, y0, x1, y1) exclusive)."""
    pool = split_digits().test
    generator = torch.Generator().manual_seed(SEED)
    out: dict[str, tuple[np.ndarray, list[dict[str, object]]]] = {}
    for stem, recipe, fewest in PICKS:
        scenes: Scenes = make_scenes(pool, 1, recipe, generator)
        while len(scenes.box_scene) < fewest:  # a walk-through shows little with one digit
            scenes = make_scenes(pool, 1, recipe, generator)
        pixels = np.round(scenes.images[0, 0].numpy() * 255).astype(np.uint8)
        boxes, classes = scenes.boxes_of(0)
        truth = [
            {"digit": int(k) - 1, "box": [int(v) for v in box.tolist()]}
            for box, k in sorted(zip(boxes, classes, strict=True), key=lambda pair: float(pair[0][0]))
        ]
        out[stem] = (pixels, truth)
    return out


def main() -> int:
    EXAMPLES.mkdir(parents=True, exist_ok=True)
    truth: dict[str, object] = {}
    for stem, (pixels, digits) in example_scenes().items():
        Image.fromarray(pixels, mode="L").save(EXAMPLES / f"{stem}.png", optimize=True)
        truth[f"{stem}.png"] = digits
    lines = [f"  {json.dumps(name)}: {json.dumps(digits)}" for name, digits in truth.items()]
    (EXAMPLES / "truth.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"wrote {len(truth)} scenes to {EXAMPLES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
