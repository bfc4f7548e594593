"""The three default models (digits_cnn, dcgan_digits, cdcgan_digits), trained into a repository when missing.

`make run` calls `ensure_default_models` before serving; a model that already has a version is skipped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from training.jobs import DEFAULT_CLASSIFIER, JobOptions, JobResult, run_classifier, run_gan
from training.publish import versions

logger = logging.getLogger(__name__)

DEFAULT_MODELS = (DEFAULT_CLASSIFIER, "dcgan_digits", "cdcgan_digits")  # the classifier first: it judges the GANs


def ensure_default_models(repo: Path, dry_run: bool = False, runs_dir: Path = Path("runs")) -> None:
    """Train and publish each default model that has no version in `repo`; print the time each took."""
    started = time.monotonic()
    results: list[JobResult] = []
    for name in DEFAULT_MODELS:
        if versions(repo / name):
            logger.info("default model=%s present in %s: skipped", name, repo)
            continue
        base = JobOptions(repository=repo, name=name, out_dir=runs_dir / name, dry_run=dry_run)
        if name == DEFAULT_CLASSIFIER:
            results.append(run_classifier(base))
        else:
            results.append(run_gan(replace(base, conditional=name.startswith("c"))))
    for result in results:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[result.report["passed"]]
        print(f"{result.name}: {result.seconds:.1f}s, report card {verdict}, published {result.version_dir}")
    if results:
        print(f"default models trained in {time.monotonic() - started:.1f}s")
