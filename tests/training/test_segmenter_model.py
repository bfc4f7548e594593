"""The U-Net segmenter and its served graph: any size that is a multiple of the stride, box decoding in input
pixels, and an ONNX export with dynamic batch, height and width that matches PyTorch at two sizes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cnnserve.contracts import segmentation
from cnnserve.training.export import ExportSpec, export_model
from cnnserve.training.segmenter.job import SEGMENTER_DYNAMIC_AXES, SEGMENTER_TOLERANCES
from cnnserve.training.segmenter.model import (
    HEAT_STRIDE,
    SIZE_UNIT_PX,
    ExportedSegmenter,
    Segmenter,
    SegmenterConfig,
    decode_boxes,
)


@pytest.fixture(scope="module")
def served() -> ExportedSegmenter:
    torch.manual_seed(0)
    model = Segmenter(SegmenterConfig())
    model.train()(torch.rand(8, 1, 64, 64))  # batch-norm statistics that are not the defaults
    return ExportedSegmenter(model).eval()


@pytest.mark.parametrize("hw", [(64, 64), (96, 128), (8, 8), (40, 24)])
def test_runs_at_any_multiple_of_the_stride(served: ExportedSegmenter, hw: tuple[int, int]) -> None:
    with torch.no_grad():
        boxes, scores, classes, mask, logits = served(torch.rand(3, 1, *hw))
    k = served.segmenter.config.max_boxes
    assert boxes.shape == (3, k, 4) and scores.shape == (3, k) and classes.shape == (3, k)
    assert mask.shape == (3, *hw) and mask.dtype == torch.uint8
    assert logits.shape == (3, 11, *hw) and classes.dtype == torch.int64
    assert torch.equal(mask, logits.argmax(1).to(torch.uint8))


def test_boxes_are_exclusive_input_pixels_from_a_known_peak() -> None:
    config = SegmenterConfig(score_threshold=0.5)
    heat = torch.full((1, 10, 6, 8), -9.0)
    heat[0, 2, 3, 5] = 4.0  # digit 2 centred in cell row 3, column 5
    heat[0, 7, 3, 6] = 1.0  # a weaker neighbour: not a peak (the 3x3 maximum over all classes is the digit 2)
    size = torch.zeros(1, 2, 6, 8)
    size[0, :, 3, 5] = torch.tensor([12.0, 20.0]) / SIZE_UNIT_PX
    offset = torch.zeros(1, 2, 6, 8)
    offset[0, :, 3, 5] = torch.tensor([0.5, 0.25])
    boxes, scores, classes = decode_boxes(heat, size, offset, config, (24, 32))
    centre_x, centre_y = (5 + 0.5) * HEAT_STRIDE, (3 + 0.25) * HEAT_STRIDE  # 22, 13
    expected = [centre_x - 6, centre_y - 10, centre_x + 6, min(centre_y + 10, 24)]
    np.testing.assert_allclose(boxes[0, 0].numpy(), expected, atol=1e-5)
    assert int(classes[0, 0]) == 3 and float(scores[0, 0]) == pytest.approx(torch.sigmoid(torch.tensor(4.0)))
    assert not boxes[0, 1:].any() and not scores[0, 1:].any() and not classes[0, 1:].any()  # padded rows


def test_export_has_the_contract_and_matches_pytorch_at_two_sizes(served: ExportedSegmenter) -> None:
    small, large = torch.rand(7, 1, 64, 64), torch.rand(7, 1, 96, 128)
    spec = ExportSpec(
        name="seg", input_names=("images",), output_names=segmentation.OUTPUTS,
        sample_inputs=lambda n, g: (torch.rand(n, 1, 64, 64, generator=g),), real_inputs=(small,),
        more_real_inputs=((large,),), dynamic_axes=SEGMENTER_DYNAMIC_AXES, output_tolerances=SEGMENTER_TOLERANCES,
    )  # fmt: skip
    result = export_model(served, spec, {})
    assert result.inputs == [{"name": "images", "datatype": "FP32", "dims": [-1, 1, -1, -1]}]
    assert [(o["name"], o["datatype"], o["dims"]) for o in result.outputs] == [
        ("boxes", "FP32", [-1, 8, 4]), ("scores", "FP32", [-1, 8]), ("classes", "INT64", [-1, 8]),
        ("mask", "UINT8", [-1, -1, -1]), ("logits", "FP32", [-1, 11, -1, -1]),
    ]  # fmt: skip
    session = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 1, "height", "width"]
    assert [o.name for o in session.get_outputs()] == list(segmentation.OUTPUTS)
    assert session.get_outputs()[3].shape == ["batch", "height", "width"]
    x = torch.rand(2, 1, 40, 24)
    got = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        want = served(x)
    assert got[3].dtype == np.uint8 and got[2].dtype == np.int64
    assert np.mean(got[3] != want[3].numpy()) <= 1e-3
    np.testing.assert_allclose(got[4], want[4].numpy(), atol=1e-3)
