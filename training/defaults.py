"""The default models, every installed kind's (kinds.py): digits_cnn, dcgan_digits, digits_segmenter,
cdcgan_digits, stylize_brushstrokes, trained into a repository when missing, and digits_cnn_int8 after a new
digits_cnn when it passes its gate (docs/quantization.md).

`make run` calls `ensure_default_models` before serving; a model that already has a version is skipped. The
classifier trains first (it judges the GANs) on every core; the rest then train side by side, one process and one
core each, longest first, which on small convolutions gets more done than both cores on one model at a time. On 2
cores the unconditional GAN (~3.5 min on one core) holds one core; the segmenter (~2.5-3.5 min), the conditional GAN
(~2.5 min) and the style model (1.3-2.2 min) share the other as each frees it (times measured under load).
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from cnnserve.contracts.variants import variant_name
from cnnserve.training import kinds
from cnnserve.training.kinds import DefaultModel, JobResult
from cnnserve.training.options import RUNS, RunOptions, available_cores
from cnnserve.training.publish import versions
from cnnserve.training.report import BelowFloor

logger = logging.getLogger(__name__)

Planned = tuple[str, DefaultModel[Any]]  # (its kind's name, the model)


def default_models() -> list[Planned]:
    """Every installed kind's default models in training order: the first ones, then the longest first."""
    found = [(kind.name, model) for kind in kinds.installed().values() for model in kind.defaults]
    return sorted(found, key=lambda planned: (not planned[1].first, -planned[1].minutes))


DEFAULT_MODELS = tuple(model.name for _, model in default_models())
"""In training order: the classifier first (it judges the GANs), then the rest longest first."""

DEFAULT_VARIANTS = tuple(variant_name(model.name, f) for _, model in default_models() for f in model.variants)
"""Published after their source model is trained, when their gates pass on this machine; absent ones are not
retrained."""


def ensure_default_models(
    repo: Path, dry_run: bool = False, runs_dir: Path = RUNS, parallel: bool | None = None
) -> None:
    """Train and publish each default model that has no version in `repo`; print the time each took.

    parallel: train the missing models after the first ones in a process each, as many at once as there are
    cores; None = when two or more are missing, there are two cores or more and it is not a dry run.
    """
    started = time.monotonic()
    missing: list[Planned] = []
    for kind, model in default_models():
        if versions(repo / model.name):
            logger.info("default model=%s present in %s: skipped", model.name, repo)
        else:
            missing.append((kind, model))
    first = [(kind, _options(model, repo, dry_run, runs_dir)) for kind, model in missing if model.first]
    rest = [(kind, _options(model, repo, dry_run, runs_dir)) for kind, model in missing if not model.first]
    results = [run_default(kind, options) for kind, options in first]
    cores = available_cores()
    if parallel is None:
        parallel = len(rest) > 1 and cores > 1 and not dry_run
    if parallel and len(rest) > 1:
        workers = min(len(rest), cores)
        per_job = max(cores // workers, 1)
        side_by_side = [replace(options, threads=per_job, progress_bar=False) for _, options in rest]
        logger.info("training %s side by side, %d at a time, %d thread(s) each",
                    ", ".join(str(o.name) for o in side_by_side), workers, per_job)  # fmt: skip
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_configure_logging) as pool:
            results += list(pool.map(run_default, [kind for kind, _ in rest], side_by_side))
    else:
        results += [run_default(kind, options) for kind, options in rest]
    for result in results:
        if result is None:
            continue
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[result.report["passed"]]
        print(f"{result.name}: {result.seconds:.1f}s, report card {verdict}, published {result.version_dir}")
    if not dry_run:
        publish_default_variants(repo, [model for _, model in missing])
    if results:
        print(f"default models trained in {time.monotonic() - started:.1f}s")


def publish_default_variants(repo: Path, models: Sequence[DefaultModel[Any]] | None = None) -> None:
    """The variants of the default models (all, or `models`) beside their sources, when their gates pass on this
    machine (last, so that the speed gate times an idle machine); a refusal is printed, not raised: the source
    serves either way."""
    from cnnserve.training.variants.make import GateRefused, VariantOptions, make_variant

    chosen = [model for _, model in default_models()] if models is None else models
    for model in chosen:
        for variant_format in model.variants:
            try:
                variant = make_variant(
                    repo, model.name, model.calibration, VariantOptions(variant_format=variant_format)
                )
            except GateRefused as err:
                print(f"{variant_name(model.name, variant_format)}: NOT published: {err}")
                continue
            print(f"{variant.name}: published {variant.version_dir}")


def run_default(kind: str, options: RunOptions) -> JobResult | None:
    """One default model's job (module level: a process pool pickles it); None when its card is below a floor its
    job enforces (the segmenter's): it is not published, and the other models still serve."""
    try:
        return kinds.installed()[kind].run(options)
    except BelowFloor as err:
        logger.error("default model=%s not published: %s", options.name, err)
        print(f"{options.name}: NOT published: {err}")
        return None


def _options(model: DefaultModel[Any], repo: Path, dry_run: bool, runs_dir: Path) -> RunOptions:
    options: RunOptions = replace(model.options, repository=repo, out_dir=runs_dir / model.name, dry_run=dry_run)
    return options


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
