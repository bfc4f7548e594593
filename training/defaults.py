"""The three default models (digits_cnn, dcgan_digits, cdcgan_digits), trained into a repository when missing.

`make run` calls `ensure_default_models` before serving; a model that already has a version is skipped. The
classifier trains first (it judges the GANs) on every core; the two GANs then train side by side, one process and
one core each, which on small convolutions gets more done than both cores on one GAN at a time.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from cnnserve.training.jobs import DEFAULT_CLASSIFIER, JobOptions, JobResult, run_classifier, run_gan
from cnnserve.training.publish import versions
from cnnserve.training.runs import available_cores

logger = logging.getLogger(__name__)

DEFAULT_MODELS = (DEFAULT_CLASSIFIER, "dcgan_digits", "cdcgan_digits")  # the classifier first: it judges the GANs


def ensure_default_models(
    repo: Path, dry_run: bool = False, runs_dir: Path = Path("runs"), parallel: bool | None = None
) -> None:
    """Train and publish each default model that has no version in `repo`; print the time each took.

    parallel: train the missing GANs in two processes; None = when both are missing, there are two cores or more
    and it is not a dry run.
    """
    started = time.monotonic()
    missing = [name for name in DEFAULT_MODELS if not versions(repo / name)]
    for name in DEFAULT_MODELS:
        if name not in missing:
            logger.info("default model=%s present in %s: skipped", name, repo)
    results: list[JobResult] = []
    if DEFAULT_CLASSIFIER in missing:
        results.append(run_classifier(_options(repo, DEFAULT_CLASSIFIER, dry_run, runs_dir)))
    gans = [_options(repo, name, dry_run, runs_dir) for name in missing if name != DEFAULT_CLASSIFIER]
    cores = available_cores()
    if parallel is None:
        parallel = len(gans) > 1 and cores > 1 and not dry_run
    if parallel and len(gans) > 1:
        per_job = max(cores // len(gans), 1)
        side_by_side = [replace(o, threads=per_job, progress_bar=False) for o in gans]
        logger.info("training %s side by side, %d thread(s) each", ", ".join(str(o.name) for o in gans), per_job)
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
        with ProcessPoolExecutor(len(gans), mp_context=context, initializer=_configure_logging) as pool:
            results += list(pool.map(run_gan, side_by_side))
    else:
        results += [run_gan(o) for o in gans]
    for result in results:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[result.report["passed"]]
        print(f"{result.name}: {result.seconds:.1f}s, report card {verdict}, published {result.version_dir}")
    if results:
        print(f"default models trained in {time.monotonic() - started:.1f}s")


def _options(repo: Path, name: str, dry_run: bool, runs_dir: Path) -> JobOptions:
    conditional = name.startswith("cdcgan")
    return JobOptions(repository=repo, name=name, out_dir=runs_dir / name, dry_run=dry_run, conditional=conditional)


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
