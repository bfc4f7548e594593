"""The real default GANs (seed 0, default settings; the default classifier judges) meet the issue-16 targets in their
own report cards: confident and right, diverse within each class, per-class FID reported. Slow: CI runs it after the
main suite (~6 minutes on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnserve.training.classifier.job import run_classifier
from cnnserve.training.classifier.kind import ClassifierOptions
from cnnserve.training.gan.job import run_gan
from cnnserve.training.gan.kind import GanOptions
from cnnserve.training.gan.report import MIN_CLASS_DIVERSITY, MIN_CONDITIONAL_HITS, MIN_CONFIDENT, MIN_DIVERSITY

DEFAULTS_THREADS = 1
"""As `make run` trains the generators on two cores: side by side, one torch thread each (training/defaults.py).
The thread count changes float sums and so the seeded result: with two threads the conditional generator's
smallest class diversity came out 0.6958 on 2026-12-06, against 0.7240 as the defaults publish it."""


@pytest.fixture(scope="module")
def judged_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    run_classifier(ClassifierOptions(repository=repo, out_dir=repo.parent / "cnn", progress_bar=False, atlas=False))
    return repo


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_default_conditional_gan_meets_its_targets(judged_repo: Path) -> None:
    result = run_gan(GanOptions(repository=judged_repo, out_dir=judged_repo.parent / "cgan", conditional=True,
                                progress_bar=False, threads=DEFAULTS_THREADS))  # fmt: skip
    checks = {c["name"]: c["value"] for c in result.report["checks"]}
    assert result.report["passed"] is True
    assert checks["asked_class_confident_share"] >= MIN_CONDITIONAL_HITS
    assert checks["min_class_diversity"] >= MIN_CLASS_DIVERSITY
    assert len(result.report["metrics"]["class_fid"]) == 10


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_default_unconditional_gan_meets_its_targets(judged_repo: Path) -> None:
    result = run_gan(GanOptions(repository=judged_repo, out_dir=judged_repo.parent / "gan", progress_bar=False,
                                threads=DEFAULTS_THREADS))  # fmt: skip
    checks = {c["name"]: c["value"] for c in result.report["checks"]}
    assert result.report["passed"] is True
    assert checks["confident_share"] >= MIN_CONFIDENT and checks["diversity"] >= MIN_DIVERSITY
    assert checks["min_class_share"] >= 0.05
