"""The model repository on disk as the server reads it: model folders, their version folders, change fingerprints.

Only files here; what is loaded lives in the registry. Which names are models and versions, and how a version policy
selects, is cnnserve.contracts.layout's, shared with training's publisher. Every path handed out is checked to stay
inside the repository after symlinks are resolved, and model names are checked before they touch the file system.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cnnserve.contracts.layout import (
    CONFIG_FILE,
    MODEL_FILE,
    NAME_PATTERN,
    NAME_RULE,
    TRITON_CONFIG_FILE,
    VERSION_PATTERN,
    VERSION_RULE,
    is_model_name,
    parse_version,
    select_versions,
)
from cnnserve.service.errors import ModelNotFound

# The registry imports these names from here; their one definition is the contract's.
__all__ = ["NAME_PATTERN", "VERSION_PATTERN", "VERSION_RULE", "Fingerprint", "Repository", "select_versions"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fingerprint:
    """What poll mode compares: a model's top-level files and its versions' model files (mtime_ns, size)."""

    files: tuple[tuple[str, int, int], ...]  # config.json, labels, ...: (name, mtime_ns, size)
    versions: tuple[tuple[int, int, int], ...]  # (version, mtime_ns, size) of <version>/model.onnx

    def version_stamp(self, version: int) -> tuple[int, int, int] | None:
        return next((v for v in self.versions if v[0] == version), None)


class Repository:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def model_names(self) -> list[str]:
        """Folders that hold a config.json, a config.pbtxt or at least one version, sorted; unsafe names and
        escapes skipped."""
        if not self.root.is_dir():
            logger.warning("event=repository_missing path=%s", self.root)
            return []
        names = []
        for entry in sorted(self.root.iterdir()):
            if not is_model_name(entry.name) or not self._inside(entry) or not entry.is_dir():
                continue
            if any((entry / f).is_file() for f in (CONFIG_FILE, TRITON_CONFIG_FILE)) or self.versions(entry.name):
                names.append(entry.name)
        return names

    def model_dir(self, name: str) -> Path:
        """The model's folder; ModelNotFound for an unsafe name, a folder outside the repository, or none."""
        if not is_model_name(name):
            raise ModelNotFound(
                f"Request for unknown model: {name!r} is not found (the name is not valid: {NAME_RULE})"
            )
        path = self.root / name
        if not self._inside(path) or not path.is_dir():
            raise ModelNotFound(f"Request for unknown model: {name!r} is not found (no such folder in the repository)")
        return path

    def versions(self, name: str) -> list[int]:
        """Versions whose folder is a version name (the contract's) and holds a model.onnx inside the repository,
        ascending."""
        folder = self.model_dir(name)
        found = []
        for entry in folder.iterdir():
            version = parse_version(entry.name)
            if version is not None and self._model_file(entry) is not None:
                found.append(version)
        return sorted(found)

    def model_path(self, name: str, version: int) -> Path:
        path = self._model_file(self.model_dir(name) / str(version))
        if path is None:
            raise ModelNotFound(f"model '{name}' has no version {version}")
        return path

    def fingerprint(self, name: str) -> Fingerprint:
        folder = self.model_dir(name)
        files = []
        for entry in sorted(folder.iterdir()):
            if not entry.name.startswith(".") and entry.is_file() and self._inside(entry):
                stat = entry.stat()
                files.append((entry.name, stat.st_mtime_ns, stat.st_size))
        versions = []
        for version in self.versions(name):
            stat = self.model_path(name, version).stat()
            versions.append((version, stat.st_mtime_ns, stat.st_size))
        return Fingerprint(tuple(files), tuple(versions))

    def _model_file(self, version_dir: Path) -> Path | None:
        path = version_dir / MODEL_FILE
        return path if self._inside(path) and path.is_file() else None

    def _inside(self, path: Path) -> bool:
        try:
            return path.resolve().is_relative_to(self.root)
        except OSError:  # a symlink loop, a vanished entry
            return False
