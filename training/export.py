"""ONNX export with a dynamic batch axis, `onnx.checker`, metadata, and the ONNX Runtime vs PyTorch parity check
that refuses a model outside tolerance. What is exported keeps the pixel contract: a classifier takes image pixels in
[0, 1] (its normalisation is the graph's first nodes, classifier/model.py's `PixelClassifier`), a generator answers
pixels in [0, 1] (gan/model.py's `PixelGenerator`), so a generic Open Inference Protocol client needs no recipe
beyond resize, channels and layout.

Exporters (torch 2.13, both offline, both pass parity on every model here): "torchscript" (`dynamo=False`, deprecated
but present; ~0.1 s a model) is the default, because "dynamo" (torch.export based, the upstream default) costs ~3 s a
model plus ~10 s once per process, which the 6-minute default training and the test budget feel. Switch with
`exporter="dynamo"` (or `--exporter dynamo`) once the TorchScript path goes away.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from cnnserve.contracts.datatypes import datatype_from_numpy
from cnnserve.training.options import Exporter

logger = logging.getLogger(__name__)

OPSET = 18  # ONNX Runtime >= 1.14 runs it; the dynamo exporter's native opset, so it needs no conversion
BATCH_DIM = "batch"  # name given to the dynamic batch axis in the ONNX graph
PARITY_BATCH_SIZES = (1, 7)


# A function that makes `n` random valid inputs for a model, in forward()'s argument order.
InputSampler = Callable[[int, torch.Generator], tuple[torch.Tensor, ...]]


class ExportError(RuntimeError):
    """The exporter or onnx.checker failed on a model."""


class ParityError(ExportError):
    """ONNX Runtime disagrees with PyTorch (eval mode) by more than the model's tolerance: never published."""

    def __init__(self, model: str, batch_size: int, inputs: str, difference: float, tolerance: float,
                 output: str | None = None) -> None:  # fmt: skip
        self.model, self.batch_size, self.difference, self.tolerance = model, batch_size, difference, tolerance
        where = f" in output '{output}'" if output is not None else ""
        super().__init__(
            f"model '{model}': ONNX Runtime vs PyTorch max abs difference {difference:.3g} > tolerance "
            f"{tolerance:.1g}{where} at batch size {batch_size} on {inputs} inputs; not published"
        )


@dataclass(frozen=True)
class ExportSpec:
    name: str  # model name in the repository; used in messages
    input_names: tuple[str, ...]  # ONNX input names, in forward()'s argument order
    output_names: tuple[str, ...]  # ONNX output names
    sample_inputs: InputSampler  # random valid inputs for the parity check and for tracing
    real_inputs: tuple[torch.Tensor, ...]  # real inputs (>= 7 items each) for the parity check
    tolerance: float = 1e-4  # max abs difference allowed between ONNX Runtime and PyTorch outputs
    exporter: Exporter = "torchscript"  # see the module docstring
    # axes other than the batch that stay dynamic, per input or output name: {"images": {2: "height"}}
    dynamic_axes: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    # per output: (max abs difference, share of its elements allowed beyond it), for outputs that a near-tie
    # may flip (an argmax mask, TopK rows); outputs not named use (tolerance, 0)
    output_tolerances: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    # more real input sets (>= 7 items each), e.g. at other image sizes, checked like real_inputs
    more_real_inputs: tuple[tuple[torch.Tensor, ...], ...] = ()


@dataclass(frozen=True)
class ExportResult:
    model: onnx.ModelProto
    max_difference: float  # worst parity difference seen over every batch size and input kind
    inputs: list[dict[str, Any]]  # [{"name", "datatype", "dims"}] as config.json writes them
    outputs: list[dict[str, Any]]


def export_model(module: nn.Module, spec: ExportSpec, metadata: Mapping[str, str]) -> ExportResult:
    """Export `module` (in eval mode), check it, embed `metadata`, and prove parity; raise ParityError if not."""
    module.eval()
    example = spec.sample_inputs(2, torch.Generator().manual_seed(0))
    model = to_onnx(module, example, spec)
    for key, value in {**metadata, "exporter": spec.exporter}.items():
        model.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"model '{spec.name}': onnx.checker refused the export: {err}") from err
    difference = check_parity(module, model.SerializeToString(), spec)
    logger.info("export model=%s exporter=%s opset=%d parity_max_abs_diff=%.3g tolerance=%.1g",
                spec.name, spec.exporter, OPSET, difference, spec.tolerance)  # fmt: skip
    return ExportResult(model, difference, *_io_specs(module, example, spec))


def to_onnx(module: nn.Module, example: tuple[torch.Tensor, ...], spec: ExportSpec) -> onnx.ModelProto:
    """The ONNX graph of `module` with every input's and output's first axis dynamic and named "batch" (and the
    axes `spec.dynamic_axes` names dynamic too)."""
    try:
        with torch.no_grad():
            model = _dynamo(module, example, spec) if spec.exporter == "dynamo" else _torchscript(module, example, spec)
    except Exception as err:  # the exporters raise many types; callers need one
        raise ExportError(f"model '{spec.name}': torch.onnx.export ({spec.exporter}) failed: {err}") from err
    _name_batch_axis(model)
    return model


def _torchscript(module: nn.Module, example: tuple[torch.Tensor, ...], spec: ExportSpec) -> onnx.ModelProto:
    buffer = io.BytesIO()
    names = (*spec.input_names, *spec.output_names)
    dynamic_axes = {name: {0: BATCH_DIM, **spec.dynamic_axes.get(name, {})} for name in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy exporter": chosen knowingly, see above
        torch.onnx.export(
            module,
            example,
            buffer,  # type: ignore[arg-type]  # a file object works; the stub says paths only
            input_names=list(spec.input_names),
            output_names=list(spec.output_names),
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes=dynamic_axes,
        )
    return onnx.load_from_string(buffer.getvalue())


def _dynamo(module: nn.Module, example: tuple[torch.Tensor, ...], spec: ExportSpec) -> onnx.ModelProto:
    # The exporter logs a line per missing torchvision op and per optimiser pass; keep training output readable.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    for noisy in ("onnxscript", "onnx_ir"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    axes = [(0, *spec.dynamic_axes.get(name, {})) for name in spec.input_names]
    dynamic_shapes = tuple({axis: torch.export.Dim.DYNAMIC for axis in each} for each in axes)
    program = torch.onnx.export(
        module,
        example,
        input_names=list(spec.input_names),
        output_names=list(spec.output_names),
        opset_version=OPSET,
        dynamo=True,
        dynamic_shapes=dynamic_shapes,
        external_data=False,
        verbose=False,
    )
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    return program.model_proto


def _name_batch_axis(model: onnx.ModelProto) -> None:
    """The dynamo exporter names the batch axis after a symbol ("s34"); call it "batch" everywhere for readers."""
    symbols = {v.type.tensor_type.shape.dim[0].dim_param for v in model.graph.input}
    symbols.discard("")
    symbols.discard(BATCH_DIM)
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in symbols:
                dim.dim_param = BATCH_DIM


def check_parity(module: nn.Module, model_bytes: bytes, spec: ExportSpec) -> float:
    """Max abs difference of ONNX Runtime (CPU) vs PyTorch over random and real inputs at batch sizes 1 and 7
    (outputs in `spec.output_tolerances`: the largest difference among the elements within their allowance)."""
    session = _ort_session(model_bytes)
    worst = 0.0
    for batch_size in PARITY_BATCH_SIZES:
        random_inputs = spec.sample_inputs(batch_size, torch.Generator().manual_seed(batch_size))
        cases = [("random", random_inputs)]
        for k, real in enumerate((spec.real_inputs, *spec.more_real_inputs)):
            cases.append(("real" if k == 0 else f"real set {k + 1}", tuple(t[:batch_size] for t in real)))
        for kind, inputs in cases:
            if inputs[0].shape[0] != batch_size:
                raise ExportError(f"model '{spec.name}': fewer than {batch_size} real inputs for the parity check")
            with torch.no_grad():
                expected = module(*inputs)
            expected_list = [expected] if isinstance(expected, torch.Tensor) else list(expected)
            feeds = {name: t.cpu().numpy() for name, t in zip(spec.input_names, inputs, strict=True)}
            got = session.run(list(spec.output_names), feeds)
            for name, want, have in zip(spec.output_names, expected_list, got, strict=True):
                tolerance, allowed_share = spec.output_tolerances.get(name, (spec.tolerance, 0.0))
                difference = _difference(want.cpu().numpy(), have, allowed_share)
                if not difference <= tolerance:  # also catches NaN
                    raise ParityError(spec.name, batch_size, kind, difference, tolerance, name)
                worst = max(worst, difference)
    return worst


def _difference(want: np.ndarray, have: np.ndarray, allowed_share: float) -> float:
    """The largest abs difference once the worst `allowed_share` of the elements are forgiven (0: the max)."""
    if want.shape != have.shape:
        return float("inf")
    if not want.size:
        return 0.0
    gaps = np.abs(want.astype(np.float64) - have.astype(np.float64)).ravel()  # float64: uint8 would wrap
    forgiven = int(allowed_share * gaps.size)
    return float(np.max(gaps)) if forgiven == 0 else float(np.sort(gaps)[-forgiven - 1])


def _ort_session(model_bytes: bytes) -> Any:
    try:
        import onnxruntime as ort
    except ModuleNotFoundError:
        raise ExportError("the parity check needs ONNX Runtime: pip install 'cnnserve[cpu]' (or [gpu])") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # parity, not speed; leaves the other core to whoever needs it
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _io_specs(
    module: nn.Module, example: tuple[torch.Tensor, ...], spec: ExportSpec
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with torch.no_grad():
        out = module(*example)
    outs = [out] if isinstance(out, torch.Tensor) else list(out)

    def describe(name: str, t: torch.Tensor) -> dict[str, Any]:
        dynamic = {0, *spec.dynamic_axes.get(name, {})}
        dims = [-1 if axis in dynamic else int(size) for axis, size in enumerate(t.shape)]
        datatype = datatype_from_numpy(torch.empty(0, dtype=t.dtype).numpy().dtype)  # the one table, via numpy
        return {"name": name, "datatype": datatype, "dims": dims}

    inputs = [describe(n, t) for n, t in zip(spec.input_names, example, strict=True)]
    outputs = [describe(n, t) for n, t in zip(spec.output_names, outs, strict=True)]
    return inputs, outputs


def source_commit() -> str:
    """`git rev-parse HEAD` of the checkout this package runs from, or "unknown" outside git."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


def build_metadata(
    labels: Sequence[str], preprocessing: Mapping[str, Any], report: Mapping[str, Any], extra: Mapping[str, Any]
) -> dict[str, str]:
    """ONNX metadata_props: labels, preprocessing and report card as JSON, the source commit, and `extra`."""
    props = {
        "labels": json.dumps(list(labels)),
        "preprocessing": json.dumps(dict(preprocessing)),
        "report": json.dumps(dict(report)),
        "source_commit": source_commit(),
        "torch_version": torch.__version__,
    }
    props.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    return props


def real_examples(images: torch.Tensor, n: int = 7) -> torch.Tensor:
    """At least n real items for the parity check, repeated when the dataset is tinier."""
    return images.repeat((-(-n // len(images)), 1, 1, 1))[: max(n, len(images))]
