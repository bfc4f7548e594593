"""The repository on disk: model and version discovery, version policies, path safety, fingerprints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cnnserve.service.errors import ModelNotFound
from cnnserve.service.registry.repository import Repository, select_versions
from tests.service.graphs import fixed_batch, write_config


def model(repo: Path, name: str, *versions: int, config: bool = True) -> Path:
    folder = repo / name
    folder.mkdir(parents=True, exist_ok=True)
    if config:
        write_config(folder)
    for version in versions:
        fixed_batch(folder / str(version) / "model.onnx")
    return folder


def test_models_are_folders_with_a_config_or_a_version(tmp_path: Path) -> None:
    model(tmp_path, "a", 1)
    model(tmp_path, "b", config=False)  # neither: not a model
    model(tmp_path, "c", 2, config=False)
    model(tmp_path, "d")
    model(tmp_path, ".hidden", 1)
    (tmp_path / "notes.txt").write_text("not a folder")
    assert Repository(tmp_path).model_names() == ["a", "c", "d"]
    assert Repository(tmp_path / "missing").model_names() == []


def test_versions_are_digit_folders_holding_model_onnx(tmp_path: Path) -> None:
    folder = model(tmp_path, "m", 1, 3, 10)
    fixed_batch(folder / ".tmp-xyz" / "model.onnx")  # a publish in progress
    fixed_batch(folder / "04" / "model.onnx")  # not a canonical number
    (folder / "5").mkdir()  # no model.onnx yet
    fixed_batch(folder / "v6" / "model.onnx")
    fixed_batch(folder / "\u00b2" / "model.onnx")  # "²".isdigit() is true, but int() refuses it
    fixed_batch(folder / ("9" * 40) / "model.onnx")  # past int64
    fixed_batch(folder / "0" / "model.onnx")  # versions start at 1, as in Triton
    fixed_batch(folder / "\u0661" / "model.onnx")  # Arabic-Indic one: int() reads it as 1, the rule does not
    repo = Repository(tmp_path)
    assert repo.versions("m") == [1, 3, 10]
    assert repo.model_path("m", 3) == (tmp_path / "m" / "3" / "model.onnx").resolve()
    with pytest.raises(ModelNotFound):
        repo.model_path("m", 5)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"latest": {"num_versions": 1}}, [10]),
        ({"latest": {"num_versions": 2}}, [3, 10]),
        ({"latest": {"num_versions": 9}}, [1, 3, 10]),
        ({"all": {}}, [1, 3, 10]),
        ({"specific": {"versions": [1, 10, 7]}}, [1, 10]),
        ({"specific": {"versions": [7]}}, []),
    ],
)
def test_version_policy(policy: dict[str, Any], expected: list[int]) -> None:
    assert select_versions([10, 1, 3], policy) == expected


@pytest.mark.parametrize(
    "name", ["..", "../m", "m/1", "/etc", "", ".m", "-m", "a" * 129, "m\x00", "m\n", "12", "my model", "\u00fc"]
)
def test_unsafe_names_never_touch_the_disk(tmp_path: Path, name: str) -> None:
    model(tmp_path / "repo", "m", 1)
    with pytest.raises(ModelNotFound):
        Repository(tmp_path / "repo").model_dir(name)


def test_symlinks_may_not_leave_the_repository(tmp_path: Path) -> None:
    repo_root = tmp_path / "repo"
    outside = model(tmp_path, "outside", 1)
    inside = model(repo_root, "inside", 1)
    os.symlink(outside, repo_root / "escape")  # a model folder outside
    os.symlink(outside / "1", inside / "2")  # a version folder outside
    (inside / "3").mkdir()
    os.symlink(outside / "1" / "model.onnx", inside / "3" / "model.onnx")  # a model file outside
    os.symlink(inside, repo_root / "alias")  # inside the repository: fine
    repo = Repository(repo_root)
    assert repo.model_names() == ["alias", "inside"]
    with pytest.raises(ModelNotFound):
        repo.model_dir("escape")
    assert repo.versions("inside") == [1]
    assert repo.versions("alias") == [1]


def test_fingerprint_follows_config_versions_and_model_files(tmp_path: Path) -> None:
    folder = model(tmp_path, "m", 1)
    repo = Repository(tmp_path)
    first = repo.fingerprint("m")
    assert repo.fingerprint("m") == first
    assert [v for v, _, _ in first.versions] == [1]

    fixed_batch(folder / "2" / "model.onnx")
    second = repo.fingerprint("m")
    assert second != first and second.files == first.files

    (folder / "2" / "model.onnx").write_bytes(b"different bytes")
    third = repo.fingerprint("m")
    assert third.version_stamp(2) != second.version_stamp(2) and third.version_stamp(1) == second.version_stamp(1)

    write_config(folder, max_batch_size=0, instance_count=2)
    assert repo.fingerprint("m").files != third.files
