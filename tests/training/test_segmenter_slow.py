"""The real default segmenter (seed 0, default settings, ~3 minutes on 2 cores) meets its floors on held-out scenes
of unseen handwriting. Slow: CI runs it after the main suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnserve.training.publish import versions
from cnnserve.training.segmenter.job import run_segmenter
from cnnserve.training.segmenter.kind import SegmenterOptions
from cnnserve.training.segmenter.report import MIN_FOUND, MIN_MIOU


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_default_segmenter_meets_its_floors(tmp_path: Path) -> None:
    result = run_segmenter(SegmenterOptions(repository=tmp_path / "repo", out_dir=tmp_path / "run", progress_bar=False))
    test = result.report["metrics"]["test"]
    assert result.report["passed"] is True
    assert test["miou"] >= MIN_MIOU and test["found"] >= MIN_FOUND
    assert test["false_box_rate"] <= 0.1
    assert versions(tmp_path / "repo" / "digits_segmenter") == [1]
