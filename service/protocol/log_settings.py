"""The logging extension (Triton's GET/POST /v2/logging and gRPC LogSettings): the server's log switches, read and
set at run time, mapped onto Python's logging, through which every module of the server logs.

Triton's switches are independent (INFO off with WARNING on, or the reverse); Python's levels are thresholds. So
the `cnnserve` logger's level is set to the lowest severity switched on (DEBUG for a verbose level above 0: Python
has one verbose level, so every level above 0 shows the same records), and a filter on the root logger's handlers
drops the severities switched off above it, whichever library logged them. `log_format` sets those handlers'
formatter. Until a client sets something, nothing is touched and the settings read what the logger does;
`close()` (server stop) undoes it all.

`log_file` reads "" (the server logs to its standard error) and is never set: a client choosing a path for the
server to write to could overwrite any file the server may write. Triton refuses it too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from cnnserve.service.errors import InvalidInput, NotSupported

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
"""The server's log line (edge/cli.py); `log_format` "default" keeps it, "ISO8601" stamps it in UTC."""
ISO8601_DATE = "%Y-%m-%dT%H:%M:%SZ"  # Triton's ISO8601 stamp: 2024-05-20T20:03:26Z
FORMATS = ("default", "ISO8601")
SWITCHES = {"log_info": logging.INFO, "log_warning": logging.WARNING, "log_error": logging.ERROR}
SETTINGS = ("log_file", "log_info", "log_warning", "log_error", "log_verbose_level", "log_format")
MAX_VERBOSE_LEVEL = 2**32 - 1  # the protocol's uint32

Value = bool | int | str


class _Gate(logging.Filter):
    """Drops records of the severities switched off (DEBUG and below when the verbose level is 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.off: frozenset[int] = frozenset()  # severities by their switch: DEBUG, INFO, WARNING, ERROR

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.off:
            return True
        level = record.levelno
        if level >= logging.ERROR:
            return logging.ERROR not in self.off
        if level >= logging.WARNING:
            return logging.WARNING not in self.off
        if level >= logging.INFO:
            return logging.INFO not in self.off
        return logging.DEBUG not in self.off


class LogSettings:
    """One per server; settings are process-wide, as Python's logging is."""

    def __init__(self, logger: str = "cnnserve") -> None:
        self._logger = logging.getLogger(logger)
        self._gate = _Gate()
        self._set: dict[str, Value] | None = None  # None: no client has set anything
        self._level: int | None = None  # the logger's own level before the first change: what close() restores
        self._handlers: list[logging.Handler] = []  # those the gate is on
        self._formatters: dict[logging.Handler, logging.Formatter | None] = {}  # originals, while ISO8601

    def current(self) -> dict[str, Value]:
        if self._set is not None:
            self._attach()  # handlers added since (a new log destination) get the gate too
            return dict(self._set)
        effective = self._logger.getEffectiveLevel()
        return {
            "log_file": "",
            **{name: effective <= level for name, level in SWITCHES.items()},
            "log_verbose_level": 1 if effective <= logging.DEBUG else 0,
            "log_format": "default",
        }

    def update(self, changes: Mapping[str, object]) -> dict[str, Value]:
        """Every change checked before any applies; None leaves a setting as it is. Returns the settings after."""
        settings = self.current()
        for name, value in changes.items():
            if name not in SETTINGS:
                raise InvalidInput(f"log setting {name!r}: unknown; the settings are {', '.join(SETTINGS)}")
            if value is not None:
                settings[name] = _checked(name, value)
        if self._level is None:
            self._level = self._logger.level
        self._set = settings
        self._apply(settings)
        return dict(settings)

    def close(self) -> None:
        """Back to how the server found logging."""
        if self._level is not None:
            self._logger.setLevel(self._level)
            self._level = None
        for handler in self._handlers:
            handler.removeFilter(self._gate)
        self._handlers.clear()
        self._restore_formatters()
        self._set = None

    def _apply(self, settings: Mapping[str, Value]) -> None:
        verbose = int(settings["log_verbose_level"]) > 0
        on = [level for name, level in SWITCHES.items() if settings[name]]
        self._logger.setLevel(logging.DEBUG if verbose else min(on, default=logging.CRITICAL + 1))
        self._gate.off = frozenset(
            [level for name, level in SWITCHES.items() if not settings[name]] + ([] if verbose else [logging.DEBUG])
        )
        if settings["log_format"] != "ISO8601":
            self._restore_formatters()
        self._attach()

    def _attach(self) -> None:
        for handler in self._targets():
            if handler not in self._handlers:
                handler.addFilter(self._gate)
                self._handlers.append(handler)
        if self._set is not None and self._set["log_format"] == "ISO8601":
            for handler in self._targets():
                if handler not in self._formatters:
                    self._formatters[handler] = handler.formatter
                    handler.setFormatter(_iso8601())

    def _restore_formatters(self) -> None:
        for handler, formatter in self._formatters.items():
            handler.setFormatter(formatter)
        self._formatters.clear()

    @staticmethod
    def _targets() -> list[logging.Handler]:
        """Where records end up: the root logger's handlers, or Python's last resort when it has none."""
        root = logging.getLogger().handlers
        return list(root) if root else [logging.lastResort] if logging.lastResort is not None else []


def _iso8601() -> logging.Formatter:
    formatter = logging.Formatter(LOG_FORMAT, datefmt=ISO8601_DATE)
    formatter.converter = time.gmtime
    return formatter


def _checked(name: str, value: object) -> Value:
    """One setting's new value (`name` one of SETTINGS), or the refusal that names it and its rule."""
    if name == "log_file":
        raise NotSupported(
            "log setting 'log_file' cannot be set through the API: a client would choose a path on the server to "
            "write to; the server logs to its standard error, which its supervisor redirects"
        )
    if name in SWITCHES:
        if not isinstance(value, bool):
            raise InvalidInput(f"log setting {name!r} must be true or false, got {value!r}")
        return value
    if name == "log_verbose_level":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_VERBOSE_LEVEL:
            raise InvalidInput(f"log setting 'log_verbose_level' must be an integer >= 0, got {value!r}")
        return value
    if value not in FORMATS:  # log_format: update() refused names outside SETTINGS
        raise InvalidInput(f"log setting 'log_format' must be one of {', '.join(FORMATS)}, got {value!r}")
    return str(value)
