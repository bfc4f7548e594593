"""The wheel installs one import name, `cnnserve`: nothing generic (`service`, `client`, `training`) lands in
site-packages, and the folders that enter the package through links arrive as real files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tracked_copy(target: Path) -> Path:
    """The committed tree (links kept as links): an in-place build would leave build/ behind, and a stale build/
    would put deleted modules into the next wheel."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source, copy = ROOT / name, target / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree, not yet committed
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy, follow_symlinks=False)
    return target


def test_the_wheel_holds_only_the_cnnserve_package(tmp_path: Path) -> None:
    source = tracked_copy(tmp_path / "src")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run([*build, str(source)], check=True, cwd=tmp_path, capture_output=True)
    (wheel,) = tmp_path.glob("cnnserve-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/", 1)[0] for name in names if ".dist-info/" not in name}
    assert top_level == {"cnnserve"}
    for module in (
        "cnnserve/service/edge/server.py",
        "cnnserve/service/scheduling/batcher.py",
        "cnnserve/training/export.py",
        "cnnserve/client/client.py",
        "cnnserve/benchmarks/bench.py",  # `cnnserve bench`
        "cnnserve/contracts/layout.py",
        "cnnserve/api/grpc_service_pb2.py",
        "cnnserve/service/edge/page/index.html",  # the page at /, package data
        "cnnserve/service/edge/page/page.js",
        "cnnserve/service/edge/page/page.css",
    ):
        assert module in names, f"{module} missing from the wheel"
    info = zipfile.ZipFile(wheel)
    (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "cnnserve = cnnserve.cli:main" in info.read(entry_points).decode()
