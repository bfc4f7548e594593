"""The five default models (digits_cnn, dcgan_digits, cdcgan_digits, digits_segmenter, stylize_brushstrokes), trained
into a repository when missing, and digits_cnn_int8 after a new digits_cnn when it passes its gate
(docs/quantization.md).

`make run` calls `ensure_default_models` before serving; a model that already has a version is skipped. The
classifier trains first (it judges the GANs) on every core; the rest then train side by side, one process and one
core each, longest first, which on small convolutions gets more done than both cores on one model at a time. On 2
cores the unconditional GAN (~3.5 min on one core) holds one core; the segmenter (~2.5-3.5 min), the style model
(1.3-2.2 min) and the conditional GAN (~2.5 min) share the other as each frees it (times measured under load).
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from cnnserve.contracts.variants import variant_name
from cnnserve.training.classifier.job import run_classifier
from cnnserve.training.gan.job import run_gan
from cnnserve.training.jobs import DEFAULT_CLASSIFIER, JobOptions, JobResult
from cnnserve.training.publish import versions
from cnnserve.training.report import BelowFloor
from cnnserve.training.runs import available_cores
from cnnserve.training.segmenter.job import DEFAULT_SEGMENTER, run_segmenter
from cnnserve.training.style.job import DEFAULT_STYLE_MODEL, StyleOptions, run_style

logger = logging.getLogger(__name__)

DEFAULT_MODELS = (DEFAULT_CLASSIFIER, "dcgan_digits", DEFAULT_SEGMENTER, DEFAULT_STYLE_MODEL, "cdcgan_digits")
"""In training order: the classifier first (it judges the GANs), then the rest longest first."""

DEFAULT_VARIANTS = (variant_name(DEFAULT_CLASSIFIER, "int8"),)
"""Published after a new classifier when their gates pass on this machine; absent ones are not retrained."""


def ensure_default_models(
    repo: Path, dry_run: bool = False, runs_dir: Path = Path("runs"), parallel: bool | None = None
) -> None:
    """Train and publish each default model that has no version in `repo`; print the time each took.

    parallel: train the missing models after the classifier in a process each, as many at once as there are
    cores; None = when two or more are missing, there are two cores or more and it is not a dry run.
    """
    started = time.monotonic()
    missing = [name for name in DEFAULT_MODELS if not versions(repo / name)]
    for name in DEFAULT_MODELS:
        if name not in missing:
            logger.info("default model=%s present in %s: skipped", name, repo)
    results: list[JobResult | None] = []
    if DEFAULT_CLASSIFIER in missing:
        results.append(run_classifier(_options(repo, DEFAULT_CLASSIFIER, dry_run, runs_dir)))
    rest = [_options(repo, name, dry_run, runs_dir) for name in missing if name != DEFAULT_CLASSIFIER]
    cores = available_cores()
    if parallel is None:
        parallel = len(rest) > 1 and cores > 1 and not dry_run
    if parallel and len(rest) > 1:
        workers = min(len(rest), cores)
        per_job = max(cores // workers, 1)
        side_by_side = [replace(o, threads=per_job, progress_bar=False) for o in rest]
        logger.info("training %s side by side, %d at a time, %d thread(s) each",
                    ", ".join(str(o.name) for o in rest), workers, per_job)  # fmt: skip
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_configure_logging) as pool:
            results += list(pool.map(run_default, side_by_side))
    else:
        results += [run_default(o) for o in rest]
    for result in results:
        if result is None:
            continue
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[result.report["passed"]]
        print(f"{result.name}: {result.seconds:.1f}s, report card {verdict}, published {result.version_dir}")
    if DEFAULT_CLASSIFIER in missing and not dry_run:
        publish_default_variant(repo)
    if results:
        print(f"default models trained in {time.monotonic() - started:.1f}s")


def publish_default_variant(repo: Path) -> None:
    """digits_cnn_int8 beside the classifier just trained, when its gate passes on this machine (last, so that the
    speed gate times an idle machine); a refusal is printed, not raised: digits_cnn serves either way."""
    from cnnserve.training.variants.make import GateRefused, VariantOptions, make_variant

    try:
        variant = make_variant(repo, DEFAULT_CLASSIFIER, "digits", VariantOptions())
    except GateRefused as err:
        print(f"{DEFAULT_CLASSIFIER}_int8: NOT published: {err}")
        return
    print(f"{variant.name}: published {variant.version_dir}")


def run_default(options: JobOptions) -> JobResult | None:
    """The job of a default model other than the classifier (module level: a process pool pickles it); None when
    the segmenter's card is below its floor: it is not published, and the other models still serve."""
    if options.name == DEFAULT_STYLE_MODEL:
        return run_style(StyleOptions(repository=options.repository, name=options.name, out_dir=options.out_dir,
                                      dry_run=options.dry_run, threads=options.threads,
                                      progress_bar=options.progress_bar))  # fmt: skip
    if options.name != DEFAULT_SEGMENTER:
        return run_gan(options)
    try:
        return run_segmenter(options)
    except BelowFloor as err:
        logger.error("default model=%s not published: %s", options.name, err)
        print(f"{options.name}: NOT published: {err}")
        return None


def _options(repo: Path, name: str, dry_run: bool, runs_dir: Path) -> JobOptions:
    conditional = name.startswith("cdcgan")
    return JobOptions(repository=repo, name=name, out_dir=runs_dir / name, dry_run=dry_run, conditional=conditional)


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
