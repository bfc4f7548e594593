"""`cnnserve serve`: flags over CNNSERVE_* environment variables, then run the server until signalled."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from service.config import CONTROL_MODES, Settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnnserve serve",
        description="Serve a model repository over gRPC (Open Inference Protocol). "
        "Every flag can also be set by CNNSERVE_<FLAG> (upper case, '-' as '_').",
    )
    p.add_argument("--model-repository", type=Path, help="model repository folder (default: model_repository)")
    p.add_argument("--host", help="address to bind (default 0.0.0.0)")
    p.add_argument("--grpc-port", type=int, help="gRPC port (default 8001; 0 = any free port)")
    p.add_argument("--http-port", type=int, help="HTTP metrics/health port (default 8002; -1 = off)")
    p.add_argument("--model-control-mode", choices=CONTROL_MODES, help="none | poll | explicit (default none)")
    p.add_argument("--poll-interval-s", type=float, help="repository rescan interval in poll mode")
    p.add_argument("--startup-models", type=lambda s: tuple(x for x in s.split(",") if x),
                   help="comma-separated models to load at start in explicit mode")
    p.add_argument("--max-message-bytes", type=int, help="largest gRPC message, sent or received")
    p.add_argument("--execution-providers", type=lambda s: tuple(x for x in s.split(",") if x),
                   help="provider preference, e.g. cuda,cpu")
    p.add_argument("--grace-period-s", type=float, help="drain time allowed on SIGTERM")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING ...")
    return p


def settings_from_args(argv: Sequence[str], env: dict[str, str] | None = None) -> Settings:
    args = build_parser().parse_args(list(argv))
    return Settings.from_env(os.environ if env is None else env, **vars(args))


def main(argv: Sequence[str]) -> int:
    try:
        settings = settings_from_args(argv)
    except ValueError as err:
        raise SystemExit(f"cnnserve serve: {err}") from None
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    from service.server import serve  # onnxruntime is imported only once settings are valid

    asyncio.run(serve(settings))
    return 0
