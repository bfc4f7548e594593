"""The model repository on disk: `<repo>/<name>/{config.json, labels.txt, <version>/model.onnx}`.

Publishing never overwrites a version and is atomic: the model is written and fsynced in `<repo>/<name>/.tmp-<uuid>`
and renamed to the next free integer, so a server (which loads only version-named folders) never sees half a model.
config.json and labels.txt are replaced atomically too, before the version appears. Which names are models and
versions, and the file names, are cnnserve.contracts.layout's: the server reads the repository by the same rules.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from cnnserve.contracts import layout
from cnnserve.contracts.datatypes import datatype_info
from cnnserve.contracts.layout import CONFIG_FILE, LABELS_FILE, MODEL_FILE, TMP_PREFIX, parse_version

logger = logging.getLogger(__name__)

SMALL_IMAGE_PIXELS = 32 * 32
"""Models of images up to this size run each operator on one ONNX Runtime thread (intra_op_threads 1): their
operators are too small to split across cores. Measured on the digits CNN (16 x 16) on 2 cores, server CPU per
request at 32 clients fell from 0.65 to 0.56 ms and one-client p50 from 1.38 to 1.07 ms (docs/benchmarks.md)."""
STALE_TMP_SECONDS = 3600.0  # older leftovers of crashed publishes are removed; younger ones may be in flight


class PublishError(RuntimeError):
    """A model that cannot be written into the repository."""


def versions(model_dir: Path) -> list[int]:
    """Published versions (version-named folders holding a model file, as the server counts them), ascending."""
    if not model_dir.is_dir():
        return []
    found = ((parse_version(p.name), p) for p in model_dir.iterdir())
    return sorted(v for v, p in found if v is not None and (p / MODEL_FILE).is_file())


def latest_model(repo: Path, name: str) -> Path | None:
    """`<repo>/<name>/<newest version>/model.onnx`, or None when the model has no version."""
    found = versions(repo / name)
    return repo / name / str(found[-1]) / MODEL_FILE if found else None


def small_image_threads(image_size: int) -> int:
    """config.json's session.intra_op_threads for square images of `image_size`: 1 up to SMALL_IMAGE_PIXELS, else 0
    (ONNX Runtime's choice, a thread per core)."""
    return 1 if image_size * image_size <= SMALL_IMAGE_PIXELS else 0


def model_config(
    name: str,
    inputs: Sequence[Mapping[str, Any]],
    outputs: Sequence[Mapping[str, Any]],
    parameters: Mapping[str, str],
    labels_file: bool = False,
    label_output: str | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    postprocessing: Mapping[str, Any] | None = None,
    max_batch_size: int = 128,
    intra_op_threads: int = 0,
    version_policy: Mapping[str, Any] | None = None,
    latency_budget_ms: int = 0,
) -> dict[str, Any]:
    """config.json as the server reads it (docs/model-repository.md); every key written but `version_policy`, which
    is written only when given (absent: the newest version serves)."""
    config: dict[str, Any] = {
        "name": name,
        "platform": layout.PLATFORM,
        "max_batch_size": max_batch_size,
        "inputs": [dict(t) for t in inputs],
        "outputs": [dict(t) for t in outputs],
    }
    if labels_file:
        config["labels_file"] = LABELS_FILE
    if label_output is not None:
        config["label_output"] = label_output
    config["dynamic_batching"] = layout.dynamic_batching_config()
    if latency_budget_ms:
        config["dynamic_batching"]["latency_budget_ms"] = latency_budget_ms
    config["instance_count"] = 1
    config["session"] = {"intra_op_threads": intra_op_threads}
    if preprocessing is not None:
        config["preprocessing"] = dict(preprocessing)
    if postprocessing is not None:
        config["postprocessing"] = dict(postprocessing)
    config["parameters"] = dict(parameters)
    if version_policy is not None:
        try:
            config["version_policy"] = layout.parse_version_policy(version_policy)
        except ValueError as err:
            raise PublishError(f"model '{name}': {err}") from None
    return config


def publish(
    repo: Path,
    name: str,
    model_bytes: bytes,
    config: Mapping[str, Any],
    labels: Sequence[str] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write config, labels and the next version of `name`; return the new version folder. `extra_files` (paths
    relative to the version folder, such as "atlas/index.json") appear with the model, in the same rename."""
    if not layout.is_model_name(name):
        raise PublishError(f"invalid model name {name!r}: {layout.NAME_RULE}")
    _check_config(name, config)
    extras = {_extra_path(path): data for path, data in (extra_files or {}).items()}
    model_dir = repo / name
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(model_dir)
    tmp = model_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        _write_synced(tmp / MODEL_FILE, model_bytes)
        for relative, data in extras.items():
            (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
            _write_synced(tmp / relative, data)
        for folder in sorted({(tmp / relative).parent for relative in extras} - {tmp}):
            _fsync_dir(folder)
        _fsync_dir(tmp)
        _replace_file(model_dir / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
        if labels is not None:
            _replace_file(model_dir / LABELS_FILE, ("\n".join(labels) + "\n").encode())
        target = _rename_to_next_version(tmp, model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(model_dir)
    logger.info("published model=%s version=%s path=%s bytes=%d", name, target.name, target, len(model_bytes))
    return target


def _rename_to_next_version(tmp: Path, model_dir: Path) -> Path:
    # A concurrent publisher may take the number first: rename fails on a non-empty target, so try the next.
    taken = [v for v in (parse_version(p.name) for p in model_dir.iterdir()) if v is not None]
    version = max(taken, default=0) + 1
    for _ in range(100):
        if version > layout.MAX_VERSION:
            break
        target = model_dir / str(version)
        if not target.exists():
            try:
                os.rename(tmp, target)
                return target
            except OSError as err:
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        version += 1
    raise PublishError(f"no free version number in {model_dir}")


def _extra_path(path: str) -> PurePosixPath:
    """A relative path inside the version folder: no absolute path, no '..', no empty part, not the model file."""
    relative = PurePosixPath(path)
    if (not path or relative.is_absolute() or "\\" in path or any(part in ("", ".", "..") for part in path.split("/"))
            or str(relative) == MODEL_FILE):  # fmt: skip
        raise PublishError(f"extra file {path!r}: must be a relative path inside the version folder "
                           f"(parts joined by '/', no '..', not {MODEL_FILE!r})")  # fmt: skip
    return relative


def _check_config(name: str, config: Mapping[str, Any]) -> None:
    """What the server would refuse on sight, refused before anything is written."""
    if config.get("name", name) != name:
        raise PublishError(f"config name {config['name']!r} must equal the model name {name!r}")
    if config.get("platform", layout.PLATFORM) != layout.PLATFORM:
        raise PublishError(f"config platform {config['platform']!r} must be {layout.PLATFORM!r}")
    for key in ("inputs", "outputs"):
        for tensor in config.get(key, ()):
            if "datatype" in tensor:
                try:
                    datatype_info(tensor["datatype"])
                except ValueError as err:
                    raise PublishError(f"config {key} '{tensor.get('name')}': {err}") from None


def remove_stale_tmp(model_dir: Path, older_than_s: float = STALE_TMP_SECONDS) -> None:
    """Delete `.tmp-*` folders a crashed publish left behind (the server ignores them either way)."""
    now = time.time()
    for path in model_dir.glob(f"{TMP_PREFIX}*"):
        try:
            if now - path.stat().st_mtime > older_than_s:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                logger.info("removed stale temporary path=%s", path)
        except OSError:
            pass  # another publisher removed or is using it


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _replace_file(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    try:
        _write_synced(tmp, data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
