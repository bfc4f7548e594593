"""The generator contract, defined once for the trainer that publishes a generator, the server that serves it and the
client that asks it: the latent input, the config parameters that describe a generator, and truncation.

A generator takes `latent` FP32 [n, latent_dim] (standard normal; the client draws it) and, when conditional,
`class` INT64 [n]; it answers `images` FP32 [n, C, H, W] in [0, 1].

Truncation. The request parameter `truncation` (a number >= 0) scales each latent of that request before it joins
a batch: 1 leaves the latents as sent, smaller values move samples towards the generator's typical output (more
faithful, less varied), 0 gives every latent the same image. Without the parameter the server applies the model's
config parameter `default_truncation`, or 1 when the model has none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from cnnserve.contracts.layout import TASK_PARAMETER

LATENT_INPUT = "latent"
CLASS_INPUT = "class"
IMAGES_OUTPUT = "images"

TASKS = ("generation", "conditional_generation")
"""config parameter `task` of a generator."""
LATENT_DIM_PARAMETER = "latent_dim"
NUM_CLASSES_PARAMETER = "num_classes"

TRUNCATION_PARAMETER = "truncation"
"""Request parameter: the factor each latent of the request is multiplied by."""
DEFAULT_TRUNCATION_PARAMETER = "default_truncation"
"""config parameter: the truncation applied when a request names none (a decimal string)."""
NO_TRUNCATION = 1.0
MAX_TRUNCATION = 100.0
"""Larger factors only push a generator's input far outside what it was trained on."""


def parse_truncation(value: object) -> float:
    """A truncation factor from a request parameter or config string; ValueError naming the rule otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"truncation must be a number in [0, {MAX_TRUNCATION:g}], got {value!r}")
    try:
        factor = float(value)
    except ValueError:
        raise ValueError(f"truncation must be a number in [0, {MAX_TRUNCATION:g}], got {value!r}") from None
    if not math.isfinite(factor) or not 0.0 <= factor <= MAX_TRUNCATION:
        raise ValueError(f"truncation must be a number in [0, {MAX_TRUNCATION:g}], got {value!r}")
    return factor


def default_truncation(parameters: Mapping[str, str]) -> float:
    """The model's default from its config parameters; NO_TRUNCATION when it names none."""
    value = parameters.get(DEFAULT_TRUNCATION_PARAMETER)
    return NO_TRUNCATION if value is None else parse_truncation(value)


def is_generator(parameters: Mapping[str, str]) -> bool:
    return parameters.get(TASK_PARAMETER) in TASKS
