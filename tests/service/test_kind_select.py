"""Which kind serves a model (kinds/select.py): the config's `kind`, else its `task`, else what the config
describes; a name that is no kind is a load error naming the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cnnserve.service.errors import ModelLoadError
from cnnserve.service.kinds import select
from cnnserve.service.registry.completion import resolve
from cnnserve.service.registry.model_config import read_config
from cnnserve.service.settings import Settings
from cnnserve.service.types import TensorSpec

IMAGES = TensorSpec("images", "FP32", (-1, 1, -1, -1))
OUTPUTS = [TensorSpec("boxes", "FP32", (-1, 8, 4)), TensorSpec("mask", "UINT8", (-1, -1, -1)),
           TensorSpec("logits", "FP32", (-1, 10))]  # fmt: skip
PAD = {"input_format": "image", "channels": 1, "resize": "pad", "stride": 8, "scale": 1 / 255}


def kind_name(tmp_path: Path, config: dict[str, Any]) -> str:
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"max_batch_size": 4, **config}))
    spec = resolve(read_config(folder), [IMAGES], OUTPUTS, version=1)
    return select.build(spec, folder / "config.json", Settings()).name


@pytest.mark.parametrize(("config", "expected"), [
    ({}, "tensor"),
    ({"label_output": "logits"}, "classification"),
    ({"preprocessing": PAD, "postprocessing": {"mask": "mask", "spatial": ["mask"]}}, "segmentation"),
    ({"preprocessing": PAD, "postprocessing": {"spatial": ["mask"]}}, "image_to_image"),
    ({"parameters": {"task": "segmentation"}}, "segmentation"),
    ({"parameters": {"task": "style_transfer"}}, "image_to_image"),
    ({"parameters": {"task": "conditional_generation"}}, "generation"),
    ({"parameters": {"task": "something_else"}, "label_output": "logits"}, "classification"),  # unknown: described
    ({"parameters": {"kind": "tensor", "task": "classification"}, "label_output": "logits"}, "tensor"),  # kind wins
])  # fmt: skip
def test_the_config_chooses_the_kind(tmp_path: Path, config: dict[str, Any], expected: str) -> None:
    assert kind_name(tmp_path, config) == expected


@pytest.mark.parametrize("value", ["no_such_kind", "tests.nowhere:Kind", "json:dumps"])
def test_a_kind_that_is_none_is_a_load_error_naming_the_key(tmp_path: Path, value: str) -> None:
    with pytest.raises(ModelLoadError, match=r"parameters\.kind"):
        kind_name(tmp_path, {"parameters": {"kind": value}})
