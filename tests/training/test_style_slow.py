"""The real default style model (seed 0, default settings, ~3 minutes on one core) meets both quality floors on
bundled photos it never trained on, and serves: its ONNX graph answers photos of other sizes. Slow: CI runs it
after the main suite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from cnnserve.contracts import style
from cnnserve.training.publish import versions
from cnnserve.training.style.job import run_style
from cnnserve.training.style.kind import DEFAULT_STYLE_MODEL, StyleOptions
from cnnserve.training.style.report import MAX_STYLE_RATIO, MIN_EDGE_CORR


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_default_style_model_meets_its_floors_on_held_out_photos(tmp_path: Path) -> None:
    result = run_style(StyleOptions(repository=tmp_path / "repo", out_dir=tmp_path / "run", threads=1,
                                    progress_bar=False))  # fmt: skip
    checks = {c["name"]: c for c in result.report["checks"]}
    assert result.report["passed"] is True
    assert checks["held_out_style_ratio"]["value"] <= MAX_STYLE_RATIO
    assert checks["held_out_edge_correlation"]["value"] >= MIN_EDGE_CORR
    for scores in result.report["metrics"]["held_out"].values():  # every photo, not only the mean
        assert scores["style_ratio"] <= MAX_STYLE_RATIO and scores["edge_correlation"] >= MIN_EDGE_CORR
    assert versions(tmp_path / "repo" / DEFAULT_STYLE_MODEL) == [1]
    assert (tmp_path / "run" / "before_after.png").stat().st_size > 0
    session = ort.InferenceSession(str(result.version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {style.INPUT: np.random.default_rng(0).random((2, 3, 40, 56), dtype=np.float32)})[0]
    assert out.shape == (2, 3, 40, 56) and out.min() >= 0.0 and out.max() <= 1.0
    assert json.loads(session.get_modelmeta().custom_metadata_map["report"])["passed"] is True
