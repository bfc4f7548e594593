"""A real `cnnserve serve` process for tests that need one: signals, memory, a server that owns its own CPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"event=listening grpc=(\S+):(\d+) http=(\S+):(\d+)(?: rest=(\S+):(\d+))?")
GRACE_S = 20.0
START_TIMEOUT_S = 30.0


class ServerProcess:
    """`python -m cnnserve serve` on ports 0; the bound ports are read from its `event=listening` log line."""

    def __init__(self, repo: Path, grace_s: float = GRACE_S, extra_args: Sequence[str] = ()) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNNSERVE_")}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cnnserve",
                "serve",
                "--model-repository",
                str(repo),
                "--host",
                "127.0.0.1",
                "--grpc-port",
                "0",
                "--http-port",
                "0",
                "--rest-port",
                "0",
                "--execution-providers",
                "cpu",
                "--grace-period-s",
                str(grace_s),
                "--log-level",
                "INFO",
                *extra_args,
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.grpc_address = self.http_url = self.rest_url = ""
        self._listening, self._ready = threading.Event(), threading.Event()
        self._reader = threading.Thread(target=self._read_log, name="server-log", daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if match := LISTENING.search(line):
                self.grpc_address = f"{match[1]}:{match[2]}"
                self.http_url = f"http://{match[3]}:{match[4]}"
                if match[5]:
                    self.rest_url = f"http://{match[5]}:{match[6]}"
                self._listening.set()
            if "event=ready " in line:
                self._ready.set()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready.wait(0.1):
            assert self.proc.poll() is None, "server exited during start-up:\n" + self.log()
            assert time.monotonic() < deadline, "server not ready in time:\n" + self.log()
        assert self._listening.is_set()

    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_exit(self, timeout_s: float) -> int:
        code = self.proc.wait(timeout_s)
        self._reader.join(5)
        return code

    def close(self) -> None:
        """Kills the process if a test left it running; closes its log pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()

    def rss_bytes(self) -> int:
        """Resident memory of the process now (VmRSS)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")


def scrape(http_url: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`, from the server's /metrics."""
    with urllib.request.urlopen(f"{http_url}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and labels.items() <= s.labels.items()
    )
