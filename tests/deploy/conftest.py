"""The compose stack for the container tests: built and started once per module, on ephemeral 127.0.0.1 ports.

Models come from a repository trained on the host (`cnnserve train defaults --dry-run`) and copied into the stack's
volume by the test override's one-shot trainer: the trainer image needs torch, which is the CUDA build on PyPI and
unreachable from the CPU wheel index here (tests/deploy/compose.test.yml says more).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.tools import COMPOSE_FILE, TEST_COMPOSE_FILE, compose_command, engine_unavailable, run

PROJECT = "cnnserve-test"
SERVICES = ("server", "lb", "prometheus")  # grafana cannot run here (no image); the trainer comes as a dependency
BUILD_TIMEOUT_S = 1200
UP_TIMEOUT_S = 300


@dataclass
class Stack:
    command: list[str]
    env: dict[str, str]
    seed: Path
    timings: dict[str, float] = field(default_factory=dict)
    _addresses: dict[tuple[str, int, int], str] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        files = ["-f", str(COMPOSE_FILE), "-f", str(TEST_COMPOSE_FILE)]
        return run([*self.command, "-p", PROJECT, *files, *args], timeout=timeout, env=self.env)

    def check(self, *args: str, timeout: float = 120) -> str:
        result = self.compose(*args, timeout=timeout)
        assert result.returncode == 0, f"docker compose {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def address(self, service: str, port: int, index: int = 1) -> str:
        """127.0.0.1:PORT published for a container port of one replica."""
        if (service, port, index) in self._addresses:
            return self._addresses[service, port, index]
        published = self.check("port", "--index", str(index), service, str(port)).strip()
        host, _, number = published.rpartition(":")
        assert host == "127.0.0.1", f"{service}:{port} is published on {host}, not on loopback only"
        address = self._addresses[service, port, index] = f"127.0.0.1:{number}"
        return address

    def containers(self, service: str, *, all_states: bool = False) -> list[dict[str, Any]]:
        out = self.check("ps", "--format", "json", *(["--all"] if all_states else []), service)
        lines = [line for line in out.splitlines() if line.strip()]
        # Compose prints one JSON object per line (older releases: one JSON array).
        if len(lines) == 1 and lines[0].startswith("["):
            return list(json.loads(lines[0]))
        return [json.loads(line) for line in lines]

    def up(self, *extra: str) -> None:
        started = time.monotonic()
        self.check(
            "up", "--detach", "--pull", "never", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), *extra, *SERVICES,
            timeout=UP_TIMEOUT_S + 60,
        )  # fmt: skip
        self.timings.setdefault("compose up --wait", time.monotonic() - started)

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", service).stdout


def seed_repository(root: Path) -> Path:
    """The three default models, trained on the host with dry-run settings (real ONNX files and configs)."""
    pytest.importorskip("torch", reason="training the seed models needs the train extra")
    repo = root / "models"
    result = subprocess.run(
        [sys.executable, "-m", "cnnserve", "train", "defaults", "--dry-run", "--model-repository", str(repo)],
        cwd=root, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return repo


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Stack]:
    if (reason := engine_unavailable()) is not None:
        pytest.skip(reason)
    command = compose_command()
    if command is None:
        pytest.skip("no Compose v2 plugin or docker-compose binary (scripts/ci_containers.sh installs one)")
    started = time.monotonic()
    seed = seed_repository(tmp_path_factory.mktemp("seed"))
    stack = Stack(command, {"TEST_MODEL_REPOSITORY": str(seed)}, seed)
    stack.timings["train seed models on the host"] = time.monotonic() - started
    stack.compose("down", "--volumes", "--remove-orphans", timeout=120)  # leftovers of an interrupted run
    try:
        started = time.monotonic()
        stack.check("build", *SERVICES, timeout=BUILD_TIMEOUT_S)
        stack.timings["compose build"] = time.monotonic() - started
        stack.up()
        yield stack
    except BaseException:
        for service in ("trainer", *SERVICES):
            sys.stderr.write(f"--- logs of {service} ---\n{stack.logs(service)[-4000:]}\n")
        raise
    finally:
        for service in SERVICES:
            started = time.monotonic()
            stack.compose("stop", "--timeout", "45", service, timeout=120)
            stack.timings[f"stop {service}"] = time.monotonic() - started
        started = time.monotonic()
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "45", timeout=180)
        stack.timings["compose down"] = time.monotonic() - started
        # Printed past pytest's capture: CI watches this stage's time budget.
        capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            timings = {k: round(v, 1) for k, v in stack.timings.items()}
            sys.stdout.write(f"\ncontainer stage, seconds: {json.dumps(timings)}\n")
