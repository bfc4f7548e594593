"""The README's example scenes are what scripts/make_example_scenes.py makes: held-out scenes with their truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]


def test_committed_scenes_are_the_scripts_output() -> None:
    made = load_script("make_example_scenes").example_scenes()
    committed = json.loads((ROOT / "examples" / "scenes" / "truth.json").read_text())
    assert set(committed) == {f"{stem}.png" for stem in made}
    for stem, (pixels, truth) in made.items():
        on_disk = np.asarray(Image.open(ROOT / "examples" / "scenes" / f"{stem}.png"))
        np.testing.assert_array_equal(on_disk, pixels, err_msg=stem)
        assert committed[f"{stem}.png"] == truth, stem
        assert truth, stem  # every example shows at least one digit
