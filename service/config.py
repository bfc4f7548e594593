"""Server settings: one frozen, typed object built once at start-up from CLI flags over CNNSERVE_* variables.

No other module reads the environment; `Settings.from_env(mapping)` lets tests pass a plain dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "CNNSERVE_"
CONTROL_MODES = ("none", "poll", "explicit")


@dataclass(frozen=True)
class Settings:
    model_repository: Path = Path("model_repository")
    """Folder of models: <name>/config.json, <name>/<version>/model.onnx."""
    host: str = "0.0.0.0"
    """Address both listeners bind to."""
    grpc_port: int = 8001
    """gRPC port (Open Inference Protocol, health, reflection); 0 picks a free one."""
    http_port: int = 8002
    """HTTP port for /metrics and /v2/health/{live,ready}; 0 picks a free one, -1 turns it off."""
    model_control_mode: str = "none"
    """none: load all at start; poll: also watch the folder; explicit: RepositoryModelLoad/Unload only."""
    poll_interval_s: float = 5.0
    """How often `poll` mode rescans the repository."""
    startup_models: tuple[str, ...] = ()
    """In `explicit` mode, models loaded at start (empty: none)."""
    max_message_bytes: int = 256 * 1024 * 1024
    """Largest gRPC message received or sent; larger ones fail with RESOURCE_EXHAUSTED."""
    execution_providers: tuple[str, ...] = ("cuda", "cpu")
    """Preference order of ONNX Runtime execution providers; the first that works for a model is used."""
    grace_period_s: float = 30.0
    """On SIGTERM/SIGINT, how long accepted requests may take to finish before the process exits."""
    log_level: str = "INFO"
    server_name: str = "cnnserve"

    def __post_init__(self) -> None:
        if self.model_control_mode not in CONTROL_MODES:
            raise ValueError(
                f"model_control_mode must be one of {', '.join(CONTROL_MODES)}, got {self.model_control_mode!r}"
            )
        for name in ("grpc_port", "http_port"):
            port = getattr(self, name)
            if not -1 <= port <= 65535:
                raise ValueError(f"{name} must be a port number 0-65535 (or -1 for off), got {port}")
        if self.max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be positive, got {self.max_message_bytes}")
        if self.poll_interval_s <= 0 or self.grace_period_s < 0:
            raise ValueError("poll_interval_s must be > 0 and grace_period_s >= 0")

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        """Settings from CNNSERVE_<FIELD> variables (upper case), then `overrides` (CLI flags) on top."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    default = f.default
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if isinstance(default, Path):
            return Path(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{f.name.upper()}: cannot read {raw!r} as {type(default).__name__}") from None
    return raw
