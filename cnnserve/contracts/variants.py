"""Published variants of a classifier (`cnnserve quantize`, docs/quantization.md), defined once for the side that
writes them (training/variants/make.py) and the side that reads them (the server, the page, clients).

A variant is a sibling model `<source>_<format>` (VARIANT_FORMATS: int8, fp16) with its own config: the source's
inputs, outputs, labels and preprocessing, plus the parameters below, all strings as config parameters are.

    quantized_from      "<source model>:<version>"  (quantized_from_parameter / parse_quantized_from)
    quantization        the format and how it was made: "int8 static QDQ per-channel", "fp16 keep_io_types"
    accuracy_source     top-1 on the held-out labelled images, FP32 (absent when the images had no labels)
    accuracy_variant    the same for the variant
    top1_agreement      share of held-out images where the variant's top-1 equals the source's
    held_out_items      how many held-out images those figures are of
    calibration_items   how many training-side images calibrated the activations' ranges (int8 only)
    calibration_source  where calibration and held-out images came from, and the split's seed
    items_per_s_source  in-process throughput of the source at speed_batch_size (absent: not measured, fp16 on CPU)
    items_per_s_variant the same for the variant
    speed_batch_size    the batch size both were measured at
    requires_provider   "cuda" on fp16 variants: the server refuses to load them on any other provider
"""

from __future__ import annotations

VARIANT_FORMATS = ("int8", "fp16")

QUANTIZED_FROM = "quantized_from"
QUANTIZATION = "quantization"
ACCURACY_SOURCE = "accuracy_source"
ACCURACY_VARIANT = "accuracy_variant"
TOP1_AGREEMENT = "top1_agreement"
HELD_OUT_ITEMS = "held_out_items"
CALIBRATION_ITEMS = "calibration_items"
CALIBRATION_SOURCE = "calibration_source"
ITEMS_PER_S_SOURCE = "items_per_s_source"
ITEMS_PER_S_VARIANT = "items_per_s_variant"
SPEED_BATCH_SIZE = "speed_batch_size"

REQUIRES_PROVIDER = "requires_provider"
"""A provider short name as config's `execution_providers` spells them ("cuda"): the model is loaded only when that
provider runs it. FP16 graphs would run on CPU through ONNX Runtime's inserted casts, slower than FP32, so a server
without CUDA refuses them instead of serving them there silently."""


def variant_name(source: str, variant_format: str) -> str:
    """The sibling model's name: `digits_cnn` -> `digits_cnn_int8`."""
    if variant_format not in VARIANT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(VARIANT_FORMATS)}, got {variant_format!r}")
    return f"{source}_{variant_format}"


def quantized_from_parameter(model: str, version: int) -> str:
    return f"{model}:{version}"


def parse_quantized_from(value: str) -> tuple[str, int]:
    """`quantized_from` -> (model, version); ValueError names the value when it is not "<model>:<version>"."""
    model, _, version = value.rpartition(":")
    if not model or not version.isascii() or not version.isdigit():
        raise ValueError(f"{QUANTIZED_FROM} must be '<model>:<version>', got {value!r}")
    return model, int(version)
