"""A `cnnserve serve` process on free loopback ports for the benchmark scripts: started, awaited until ready,
stopped on exit. Used as `with LocalServer(repo) as server: ... server.grpc_address ...`."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    def __init__(self, repository: Path, ready_timeout_s: float = 120.0) -> None:
        self.repository, self.ready_timeout_s = repository, ready_timeout_s
        self.grpc_port, self.rest_port = free_port(), free_port()
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        self.ready_after_s = 0.0

    def __enter__(self) -> LocalServer:
        command = [
            str(Path(sys.executable).parent / "cnnserve"),
            "serve",
            "--model-repository",
            str(self.repository),
            "--grpc-port",
            str(self.grpc_port),
            "--rest-port",
            str(self.rest_port),
            "--http-port",
            "-1",
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port}/v2/health/ready", timeout=1):
                    break
            except OSError:
                if time.monotonic() - started > self.ready_timeout_s or self.process.poll() is not None:
                    self.__exit__()
                    raise RuntimeError(f"the server on {self.repository} did not become ready") from None
                time.sleep(0.02)  # fine-grained: first_requests.py measures from the moment of ready
        self.ready_after_s = time.monotonic() - started
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
