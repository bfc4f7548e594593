"""Finding the container tools (hadolint, Compose, kubernetes-validate, a Docker engine) and reading deploy files.

Each lookup answers None or a reason instead of failing, so a test can skip saying what is missing.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
TEST_COMPOSE_FILE = ROOT / "tests" / "deploy" / "compose.test.yml"
DOCKERFILES = {
    "server": DEPLOY / "server" / "Dockerfile",
    "server-gpu": DEPLOY / "server-gpu" / "Dockerfile",
    "trainer": DEPLOY / "trainer" / "Dockerfile",
}
STANDIN_DOCKERFILES = sorted((ROOT / "tests" / "deploy" / "standins").glob("*.Dockerfile"))


def tool(name: str) -> str | None:
    """A console script of this virtual environment (dev extra) first, then PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def compose_command() -> list[str] | None:
    """`docker compose` (the CLI plugin) when the docker CLI has it, else the standalone `docker-compose` v2."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = tool("docker-compose")
    if standalone is not None:
        probe = subprocess.run([standalone, "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0 and "version v1" not in probe.stdout.lower():
            return [standalone]
    return None


def engine_unavailable() -> str | None:
    """Why the Docker engine cannot be used, or None when `docker info` answers."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker CLI on PATH (CI brings one up with scripts/ci_containers.sh)"
    try:
        info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer in 20 s"
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["no reason given"])[-1]
        return f"no Docker engine reachable ({reason}); CI starts one with scripts/ci_containers.sh"
    return None


class _ComposeLoader(yaml.SafeLoader):
    """Reads Compose's merge tags (!reset, !override) as the plain value they carry."""


def _untagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


for _tag in ("!reset", "!override"):
    _ComposeLoader.add_constructor(_tag, _untagged)


def load_compose(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_ComposeLoader)  # type: ignore[no-any-return]


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        pending += (" " if pending else "") + line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            keyword, _, rest = pending.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
            pending = ""
    return instructions


def dockerfile_env(path: Path) -> dict[str, str]:
    """ENV KEY=VALUE pairs of the final stage."""
    instructions = dockerfile_instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    env: dict[str, str] = {}
    for keyword, args in instructions[last_from:]:
        if keyword == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def run(command: list[str], *, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
        env=None if env is None else {**os.environ, **env},
    )  # fmt: skip
