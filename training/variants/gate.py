"""The gate a variant passes before it is published: is it as good (top-1 accuracy on held-out labelled images, or
top-1 agreement with the FP32 model where there are no labels) and, for INT8, is it faster in-process on this
machine at the model's batch size? Both figures are measured, here and now; nothing is assumed."""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx.utils import Extractor

from cnnserve.benchmarks.in_process import in_process
from cnnserve.training.variants.calibration import GateImages
from cnnserve.training.variants.source import VariantError

EVAL_BATCH = 64
SPEED_ROUNDS = 3
"""FP32 and the variant are timed in turn this many times, and each keeps its median: a neighbour's burst on a
shared machine then costs one round, not the verdict."""


@dataclass(frozen=True)
class GateLimits:
    max_accuracy_drop_points: float = 0.5  # refuse when labelled top-1 accuracy falls by more (percentage points)
    min_agreement: float = 0.99  # without labels: refuse below this share of top-1 answers equal to FP32's
    min_speedup: float = 1.0  # refuse unless variant items/s exceed the source's by more than this factor


@dataclass(frozen=True)
class AccuracyFigures:
    held_out: int  # images the figures are of
    agreement: float  # share where the variant's top-1 is the source's
    source_accuracy: float | None  # None: the images have no labels
    variant_accuracy: float | None

    @property
    def drop_points(self) -> float | None:
        if self.source_accuracy is None or self.variant_accuracy is None:
            return None
        return (self.source_accuracy - self.variant_accuracy) * 100.0


@dataclass(frozen=True)
class SpeedFigures:
    batch_size: int
    threads: int  # intra-op threads, as the model's config gives the server (0: one per core)
    source_items_per_s: float
    variant_items_per_s: float

    @property
    def ratio(self) -> float:
        return self.variant_items_per_s / self.source_items_per_s


@dataclass(frozen=True)
class Verdict:
    gate: str  # "accuracy", "agreement" or "speed"
    passed: bool
    line: str  # both figures and the rule, one line


def top1(model: bytes | Path, input_name: str, output_name: str, images: npt.NDArray[np.float32]
         ) -> npt.NDArray[np.int64]:  # fmt: skip
    """The class each image scores highest, run on CPU in batches of EVAL_BATCH."""
    try:
        session = ort.InferenceSession(model if isinstance(model, bytes) else str(model),
                                       providers=["CPUExecutionProvider"])  # fmt: skip
    except Exception as err:  # ORT's own exception classes; the converted graph's fault, not the user's
        raise VariantError(f"ONNX Runtime cannot load the {'variant' if isinstance(model, bytes) else 'source'}: "
                           f"{err}") from None  # fmt: skip
    answers = [session.run([output_name], {input_name: images[i : i + EVAL_BATCH]})[0].argmax(axis=1)
               for i in range(0, len(images), EVAL_BATCH)]  # fmt: skip
    return np.concatenate(answers).astype(np.int64)


def accuracy_figures(source: Path, variant: bytes, input_name: str, output_name: str, images: GateImages
                     ) -> AccuracyFigures:  # fmt: skip
    fp32 = top1(source, input_name, output_name, images.held_out)
    low = top1(variant, input_name, output_name, images.held_out)
    labels = images.held_out_labels
    return AccuracyFigures(
        held_out=len(fp32), agreement=float(np.mean(fp32 == low)),
        source_accuracy=None if labels is None else float(np.mean(fp32 == labels)),
        variant_accuracy=None if labels is None else float(np.mean(low == labels)),
    )  # fmt: skip


def scores_only(model: onnx.ModelProto, input_name: str, output_name: str) -> onnx.ModelProto:
    """The graph cut down to the class scores (onnx.utils.Extractor), as the server runs a request that names no
    optional output (service/execution/pruning.py). On the whole graph a feature map that is a graph output keeps
    its conv in FP32 between DequantizeLinear and QuantizeLinear (ONNX Runtime fuses QLinearConv only when the
    tensor is internal): the digits CNN's INT8 ran 0.35x FP32 so, 1.3x cut (batch 32)."""
    return Extractor(model).extract_model([input_name], [output_name])


def speed_figures(source: Path, variant: bytes, input_name: str, output_name: str, sample: npt.NDArray[np.float32],
                  batch_size: int, threads: int, duration_s: float) -> SpeedFigures:  # fmt: skip
    """In-process items/s of both graphs cut to the class scores, on `batch_size` real items, CPU, the server's
    thread settings (no spinning), alternating SPEED_ROUNDS times; medians."""
    repeats = -(-batch_size // len(sample))
    inputs = {input_name: np.ascontiguousarray(np.concatenate([sample] * repeats)[:batch_size])}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"source": Path(tmp) / "source.onnx", "variant": Path(tmp) / "variant.onnx"}
        for key, model in (("source", onnx.load(str(source))), ("variant", onnx.load_from_string(variant))):
            onnx.save(scores_only(model, input_name, output_name), str(paths[key]))
        rates: dict[str, list[float]] = {"source": [], "variant": []}
        for _ in range(SPEED_ROUNDS):
            for key, measured in rates.items():
                run = in_process(paths[key], inputs, duration_s, threads, allow_spinning=False, outputs=[output_name])
                measured.append(run.items_per_s)
    return SpeedFigures(batch_size, threads, statistics.median(rates["source"]), statistics.median(rates["variant"]))


def verdicts(source: str, variant: str, accuracy: AccuracyFigures, speed: SpeedFigures | None,
             limits: GateLimits) -> list[Verdict]:  # fmt: skip
    """The accuracy (or, without labels, agreement) verdict, then the speed one when speed was measured."""
    found: list[Verdict] = []
    drop = accuracy.drop_points
    if drop is not None:
        assert accuracy.source_accuracy is not None and accuracy.variant_accuracy is not None
        passed = drop <= limits.max_accuracy_drop_points
        found.append(Verdict("accuracy", passed, (
            f"accuracy gate: {source} {accuracy.source_accuracy:.4f}, {variant} {accuracy.variant_accuracy:.4f} "
            f"top-1 on {accuracy.held_out} held-out images (drop {drop:.2f} points, limit "
            f"{limits.max_accuracy_drop_points:g}; top-1 agreement {accuracy.agreement:.4f}): "
            f"{'pass' if passed else 'refused'}")))  # fmt: skip
    else:
        passed = accuracy.agreement >= limits.min_agreement
        found.append(Verdict("agreement", passed, (
            f"agreement gate: {variant} answers {source}'s top-1 on {accuracy.agreement:.4f} of "
            f"{accuracy.held_out} held-out images without labels (limit {limits.min_agreement:g}): "
            f"{'pass' if passed else 'refused'}")))  # fmt: skip
    if speed is not None:
        passed = speed.ratio > limits.min_speedup
        threads = f"intra-op threads {speed.threads}" if speed.threads else "a thread per core"
        found.append(Verdict("speed", passed, (
            f"speed gate: {source} {speed.source_items_per_s:.1f} items/s, {variant} {speed.variant_items_per_s:.1f} "
            f"items/s in-process (class scores only) at batch {speed.batch_size}, CPU, {threads} "
            f"({speed.ratio:.2f}x, must be > {limits.min_speedup:g}x): {'pass' if passed else 'refused'}"
        )))  # fmt: skip
    return found
