"""`cnnserve quantize` and `train --quantize`: make a variant of a published classifier (INT8 by ONNX Runtime's
static QDQ quantiser, or FP16 for the CUDA provider), gate it (training/variants/gate.py) and publish it as the
sibling model `<source>_<format>` with the source's config, labels and the figures (cnnserve.contracts.variants).
A refused variant is not published; the caller gets GateRefused with the gate's one-line verdict."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort

from cnnserve.contracts import features, variants
from cnnserve.contracts.layout import LABELS_FILE
from cnnserve.training.publish import publish
from cnnserve.training.variants.calibration import GateImages, gate_images
from cnnserve.training.variants.gate import (
    AccuracyFigures,
    GateLimits,
    SpeedFigures,
    Verdict,
    accuracy_figures,
    speed_figures,
    verdicts,
)
from cnnserve.training.variants.quantize import convert_fp16, quantize_int8
from cnnserve.training.variants.source import SourceModel, VariantError, read_source

logger = logging.getLogger(__name__)

SPEED_DURATION_S = 2.0
"""Timed seconds per model per round of the speed gate (SPEED_ROUNDS rounds each)."""


@dataclass(frozen=True)
class VariantOptions:
    variant_format: str = "int8"  # one of contracts.variants.VARIANT_FORMATS
    limits: GateLimits = field(default_factory=GateLimits)
    batch_size: int | None = None  # the speed gate's batch; None: the source's preferred batch size
    speed_duration_s: float = SPEED_DURATION_S
    seed: int = 0  # the split's seed: the one the source was trained with keeps calibration off its validation


class GateRefused(RuntimeError):
    """A variant measured and refused; str() is the refusing gate's verdict line."""

    def __init__(self, refused: Verdict, found: list[Verdict]) -> None:
        super().__init__(refused.line)
        self.gate = refused.gate
        self.verdicts = found


@dataclass(frozen=True)
class VariantResult:
    name: str  # the variant's model name
    version_dir: Path
    verdicts: list[Verdict]
    parameters: dict[str, str]  # what its config states


def make_variant(repo: Path, source_name: str, images: str | GateImages, options: VariantOptions,
                 say: Callable[[str], None] = print) -> VariantResult:  # fmt: skip
    """Quantise the newest version of `source_name`, calibrated and gated on `images` (a SOURCE for
    calibration.gate_images, or a training run's own), print each verdict, then publish or raise GateRefused."""
    if options.variant_format not in variants.VARIANT_FORMATS:
        raise VariantError(f"--format must be one of {', '.join(variants.VARIANT_FORMATS)}, "
                           f"got {options.variant_format!r}")  # fmt: skip
    source = read_source(repo, source_name)
    name = variants.variant_name(source.name, options.variant_format)
    chosen = gate_images(images, source, options.seed) if isinstance(images, str) else images
    logger.info("event=variant_images model=%s source=%s calibration=%d held_out=%d", name, chosen.description,
                len(chosen.calibration), len(chosen.held_out))  # fmt: skip
    model_bytes = source.path.read_bytes()
    try:
        if options.variant_format == "int8":
            variant = quantize_int8(model_bytes, source.input_name, chosen.calibration)
        else:
            variant = convert_fp16(model_bytes)
    except Exception as err:  # the tools raise what they like on graphs they cannot handle
        logger.exception("event=variant_failed model=%s format=%s", source.name, options.variant_format)
        raise VariantError(f"model '{source.name}': the {options.variant_format} conversion failed: "
                           f"{type(err).__name__}: {err}") from None  # fmt: skip
    accuracy = accuracy_figures(source.path, variant, source.input_name, source.output_name, chosen)
    speed = _speed(source, variant, chosen, options)
    found = verdicts(source.name, name, accuracy, speed, options.limits)
    for verdict in found:
        say(verdict.line)
    if speed is None:
        # The gate times CPU runs; an FP16 graph runs there only through inserted casts, and is never served there.
        say(f"speed: not measured for {name}: FP16 is published for the CUDA provider only (serve it on a GPU and "
            "compare with `cnnserve bench`)")  # fmt: skip
    refused = next((v for v in found if not v.passed), None)
    if refused is not None:
        raise GateRefused(refused, found)
    parameters = _parameters(source, options.variant_format, chosen, accuracy, speed)
    version_dir = publish(repo, name, variant, _config(source, name, parameters, options.variant_format),
                          source.labels or None)  # fmt: skip
    return VariantResult(name, version_dir, found, parameters)


def _speed(source: SourceModel, variant: bytes, images: GateImages, options: VariantOptions) -> SpeedFigures | None:
    if options.variant_format == "fp16":
        return None
    batch = options.batch_size or source.preferred_batch_size
    return speed_figures(source.path, variant, source.input_name, source.output_name, images.held_out, batch,
                         source.intra_op_threads, options.speed_duration_s)  # fmt: skip


def _parameters(source: SourceModel, variant_format: str, images: GateImages, accuracy: AccuracyFigures,
                speed: SpeedFigures | None) -> dict[str, str]:  # fmt: skip
    how = (f"int8 static QDQ, per-channel QInt8 weights and activations (onnxruntime {ort.__version__})"
           if variant_format == "int8" else "fp16, FP32 inputs and outputs kept (onnxconverter-common)")  # fmt: skip
    parameters = {
        variants.QUANTIZED_FROM: variants.quantized_from_parameter(source.name, source.version),
        variants.QUANTIZATION: how,
        variants.TOP1_AGREEMENT: f"{accuracy.agreement:.4f}",
        variants.HELD_OUT_ITEMS: str(accuracy.held_out),
        variants.CALIBRATION_SOURCE: images.description,
    }
    if accuracy.source_accuracy is not None:
        parameters[variants.ACCURACY_SOURCE] = f"{accuracy.source_accuracy:.4f}"
        parameters[variants.ACCURACY_VARIANT] = f"{accuracy.variant_accuracy:.4f}"
    if variant_format == "int8":
        parameters[variants.CALIBRATION_ITEMS] = str(len(images.calibration))
    if speed is not None:
        parameters[variants.ITEMS_PER_S_SOURCE] = f"{speed.source_items_per_s:.1f}"
        parameters[variants.ITEMS_PER_S_VARIANT] = f"{speed.variant_items_per_s:.1f}"
        parameters[variants.SPEED_BATCH_SIZE] = str(speed.batch_size)
    if variant_format == "fp16":
        parameters[variants.REQUIRES_PROVIDER] = "cuda"
    return parameters


def _config(source: SourceModel, name: str, parameters: dict[str, str], variant_format: str) -> dict[str, Any]:
    """The source's config (inputs, outputs, preprocessing, batching, session) under the variant's name; its atlas
    stays with the source, whose neurons it shows."""
    config = dict(source.config)
    config["name"] = name
    inherited = {k: v for k, v in (source.config.get("parameters") or {}).items() if k != features.ATLAS_PARAMETER}
    config["parameters"] = {**inherited, **parameters}
    if source.labels:
        config["labels_file"] = LABELS_FILE
    if variant_format == "fp16":
        config["execution_providers"] = ["cuda"]
    return config
