"""The repository layout: versions 1, 2, ... never overwritten; atomic publishing; leftovers ignored."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnserve.contracts import layout
from cnnserve.training import publish as publish_module
from cnnserve.training.publish import PublishError, latest_model, model_config, publish, versions

CONFIG = model_config(
    "m", [{"name": "images", "datatype": "FP32", "dims": [-1, 1, 16, 16]}],
    [{"name": "logits", "datatype": "FP32", "dims": [-1, 10]}], {"task": "classification"},
    labels_file=True, label_output="logits",
)  # fmt: skip


def test_versions_count_up_and_never_overwrite(tmp_path: Path) -> None:
    first = publish(tmp_path, "m", b"one", CONFIG, ["a", "b"])
    second = publish(tmp_path, "m", b"two", CONFIG, ["a", "b"])
    assert (first.name, second.name) == ("1", "2")
    assert (first / "model.onnx").read_bytes() == b"one"
    assert (second / "model.onnx").read_bytes() == b"two"
    assert versions(tmp_path / "m") == [1, 2]
    assert latest_model(tmp_path, "m") == second / "model.onnx"
    assert json.loads((tmp_path / "m" / "config.json").read_text()) == CONFIG
    assert (tmp_path / "m" / "labels.txt").read_text() == "a\nb\n"


def test_a_numbered_folder_without_a_model_is_still_not_reused(tmp_path: Path) -> None:
    (tmp_path / "m" / "7").mkdir(parents=True)
    (tmp_path / "m" / "7" / "notes").write_text("someone's")
    assert publish(tmp_path, "m", b"x", CONFIG).name == "8"
    assert (tmp_path / "m" / "7" / "notes").read_text() == "someone's"


def test_a_failure_mid_publish_leaves_no_version_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    publish(tmp_path, "m", b"one", CONFIG)

    def crash(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("training.publish.os.rename", crash)
    with pytest.raises(OSError):
        publish(tmp_path, "m", b"two", CONFIG)
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == ["1", "config.json"]


def test_a_crash_after_writing_the_model_leaves_only_a_hidden_temporary(tmp_path: Path, monkeypatch) -> None:
    """A killed process never reaches the cleanup: what it leaves is a .tmp-* folder that no reader loads."""

    def killed(path: Path) -> None:
        raise SystemExit("killed")

    monkeypatch.setattr("training.publish.shutil.rmtree", lambda *a, **k: None)  # the cleanup never ran
    monkeypatch.setattr(publish_module, "_fsync_dir", killed)
    with pytest.raises(SystemExit):
        publish(tmp_path, "m", b"half", CONFIG)
    leftovers = list((tmp_path / "m").iterdir())
    assert [p.name.startswith(".tmp-") for p in leftovers] == [True]
    assert versions(tmp_path / "m") == []
    assert latest_model(tmp_path, "m") is None


def test_extra_files_appear_with_the_version(tmp_path: Path, monkeypatch) -> None:
    extras = {"atlas/index.json": b"{}", "atlas/block1-top.png": b"png", "notes.txt": b"hello"}
    version = publish(tmp_path, "m", b"one", CONFIG, extra_files=extras)
    assert {str(p.relative_to(version)): p.read_bytes() for p in version.rglob("*") if p.is_file()} == {
        "model.onnx": b"one",
        **extras,
    }
    renamed: list[list[str]] = []  # the extras are in the folder before the one rename that makes the version
    real_rename = os.rename

    def rename(src: str, dst: str) -> None:
        renamed.append(sorted(os.listdir(src)))
        real_rename(src, dst)

    monkeypatch.setattr("training.publish.os.rename", rename)
    publish(tmp_path, "m", b"two", CONFIG, extra_files=extras)
    assert renamed == [["atlas", "model.onnx", "notes.txt"]]


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../escape.json", "atlas/../../x", "atlas//x", "./x", "", "atlas\\..\\x", "model.onnx"]
)
def test_extra_files_outside_the_version_folder_are_refused_before_writing(tmp_path: Path, path: str) -> None:
    with pytest.raises(PublishError, match="extra file"):
        publish(tmp_path, "m", b"one", CONFIG, extra_files={"atlas/index.json": b"{}", path: b"x"})
    assert not (tmp_path / "m").exists()
    assert not (tmp_path / "escape.json").exists()


def test_stale_temporaries_are_removed_and_fresh_ones_kept(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    stale, fresh = model_dir / ".tmp-stale", model_dir / ".tmp-fresh"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(b"half")
    old = time.time() - 2 * publish_module.STALE_TMP_SECONDS
    os.utime(stale, (old, old))
    assert publish(tmp_path, "m", b"x", CONFIG).name == "1"
    assert not stale.exists()
    assert fresh.exists()  # may belong to a publish in flight


@pytest.mark.parametrize("name", ["", ".hidden", "12", "a/b", "my model", "-m", "a" * 129, "m\u0661"])
def test_bad_model_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(PublishError):
        publish(tmp_path, name, b"x", CONFIG)


def test_folders_that_are_no_version_names_are_neither_counted_nor_in_the_way(tmp_path: Path) -> None:
    for folder in ("01", "0", "\u00b2", "\u0661", "1 ", "v2"):  # "\u00b2".isdigit() and int("\u0661") == 1
        (tmp_path / "m" / folder).mkdir(parents=True)
        (tmp_path / "m" / folder / "model.onnx").write_bytes(b"someone's")
    assert versions(tmp_path / "m") == []
    assert publish(tmp_path, "m", b"x", CONFIG).name == "1"
    assert versions(tmp_path / "m") == [1]


def test_a_version_policy_is_written_in_the_form_the_server_reads() -> None:
    config = model_config("m", [], [], {}, version_policy={"specific": {"versions": [3, 1]}})
    assert config["version_policy"] == {"specific": {"versions": [1, 3]}}
    assert "version_policy" not in CONFIG
    with pytest.raises(PublishError, match="num_versions"):
        model_config("m", [], [], {}, version_policy={"latest": {"num_versions": 0}})


@settings(max_examples=15, deadline=None)
@given(st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=6))
def test_each_model_counts_its_own_versions(tmp_path_factory, names: list[str]) -> None:
    repo = tmp_path_factory.mktemp("repo")
    for name in names:
        publish(repo, name, name.encode(), {**CONFIG, "name": name})
    for name in ("a", "b"):
        assert versions(repo / name) == list(range(1, names.count(name) + 1))


def test_config_writes_only_keys_the_server_knows() -> None:
    full = model_config("m", [], [], {}, labels_file=True, label_output="y", preprocessing={}, postprocessing={},
                        version_policy={"all": {}})  # fmt: skip
    assert full.keys() <= layout.CONFIG_KEYS
    assert full["dynamic_batching"].keys() <= set(layout.DYNAMIC_BATCHING_KEYS)
    assert full["session"].keys() <= set(layout.SESSION_KEYS)


def test_config_carries_every_key_the_server_reads() -> None:
    keys = {"name", "platform", "max_batch_size", "inputs", "outputs", "labels_file", "label_output",
            "dynamic_batching", "instance_count", "parameters"}  # fmt: skip
    assert keys <= CONFIG.keys()
    assert CONFIG["platform"] == "onnxruntime_onnx"
    assert CONFIG["dynamic_batching"] == {
        "max_queue_delay_us": 500,
        "preferred_batch_sizes": [],
        "max_queue_size": 1024,
    }
