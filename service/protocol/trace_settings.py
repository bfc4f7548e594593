"""The trace extension (Triton's gRPC TraceSetting, REST GET/POST /v2/trace/setting and
/v2/models/{m}/trace/setting): which requests get a trace, read and changed at run time, globally and per model.

Traces go where OpenTelemetry's OTEL_* variables say (edge/tracing.py); these settings choose which requests make
one, before OpenTelemetry's own sampler sees them:
- trace_level: OFF, TIMESTAMPS (the request's spans) or TENSORS (also its inputs' names, datatypes and shapes);
- trace_rate: one request of every N, counted per model (the first is traced);
- trace_count: how many more requests to trace, then none (-1: no limit); it counts down as they are traced.
As in Triton, values are lists of strings; a model's setting set to an empty list follows the global one again, a
global one goes back to its default. trace_mode reads "opentelemetry". Triton's trace_file and log_frequency belong
to its file mode, which this server does not have: setting them is refused (UNIMPLEMENTED, as setting log_file is).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cnnserve.service.errors import FailedPrecondition, InvalidInput, NotSupported

LEVELS = ("OFF", "TIMESTAMPS", "TENSORS")
OWN = ("trace_level", "trace_rate", "trace_count")  # what a model may set for itself
FILE_MODE = ("trace_file", "log_frequency")
Setting = str | int


class TraceSettings:
    """One per server. `on`: whether the server traces at all (--trace); off, only OFF may be set."""

    def __init__(self, on: bool) -> None:
        self._on = on
        self._defaults: dict[str, Setting] = {"trace_level": "TIMESTAMPS" if on else "OFF", "trace_rate": 1,
                                              "trace_count": -1}  # fmt: skip
        self._global: dict[str, Setting] = dict(self._defaults)
        self._models: dict[str, dict[str, Setting]] = {}  # a model's own settings, where it has any
        self._seen: dict[str, int] = {}  # requests per model, for trace_rate

    def level(self, model: str) -> str:
        return str(self._own(model, "trace_level")[0]["trace_level"])

    def sample(self, model: str) -> bool:
        """Whether this request of `model` makes a trace; counts it for trace_rate and trace_count."""
        if self.level(model) == "OFF":
            return False
        counter, _ = self._own(model, "trace_count")
        if counter["trace_count"] == 0:
            return False
        seen = self._seen.get(model, 0)
        self._seen[model] = seen + 1
        if seen % int(self._own(model, "trace_rate")[0]["trace_rate"]):
            return False
        if int(counter["trace_count"]) > 0:
            counter["trace_count"] = int(counter["trace_count"]) - 1
        return True

    def current(self, model: str | None = None) -> dict[str, list[str]]:
        """The settings in force (for a model: its own, else the global ones), as Triton writes them."""
        values = {name: self._own(model, name)[0][name] if model else self._global[name] for name in OWN}
        return {**{name: [str(value)] for name, value in values.items()}, "trace_mode": ["opentelemetry"]}

    def update(self, changes: Mapping[str, Sequence[str]], model: str | None = None) -> dict[str, list[str]]:
        """Applies `changes` (all checked first: one bad value changes nothing); the settings after them."""
        parsed: dict[str, Setting | None] = {}
        for name, values in changes.items():
            if name in FILE_MODE:
                raise NotSupported(f"trace setting {name!r} belongs to Triton's file mode; traces here go to "
                                   "OpenTelemetry's exporter (OTEL_* variables)")  # fmt: skip
            if name not in OWN:
                raise InvalidInput(f"unknown trace setting {name!r}; expected one of {', '.join(OWN)}")
            parsed[name] = _parse(name, list(values)) if values else None
        if not self._on and parsed.get("trace_level") not in (None, "OFF"):
            raise FailedPrecondition("tracing is off on this server: start it with --trace (CNNSERVE_TRACE), and "
                                     "OTEL_* variables saying where traces go")  # fmt: skip
        target = self._global if model is None else self._models.setdefault(model, {})
        for name, value in parsed.items():
            if value is not None:
                target[name] = value
            elif model is None:
                target[name] = self._defaults[name]
            else:
                target.pop(name, None)
        if model is not None and not target:
            del self._models[model]
        if "trace_rate" in parsed:  # a new rate starts counting afresh
            self._seen.clear() if model is None else self._seen.pop(model, None)
        return self.current(model)

    def _own(self, model: str | None, name: str) -> tuple[dict[str, Setting], bool]:
        """The settings that hold `name` for `model` (its own, or the global ones), and whether they are its own."""
        own = self._models.get(model) if model else None
        if own is not None and name in own:
            return own, True
        return self._global, False


def _parse(name: str, values: list[str]) -> Setting:
    if name == "trace_level":
        levels = {v.strip().upper() for v in values}
        if not levels <= set(LEVELS):
            raise InvalidInput(f"trace_level: {sorted(levels - set(LEVELS))} unknown; expected {', '.join(LEVELS)}")
        return "TENSORS" if "TENSORS" in levels else "TIMESTAMPS" if "TIMESTAMPS" in levels else "OFF"
    if len(values) != 1:
        raise InvalidInput(f"{name}: expected one value, got {values}")
    try:
        number = int(values[0])
    except ValueError:
        raise InvalidInput(f"{name}: expected an integer, got {values[0]!r}") from None
    lowest = 1 if name == "trace_rate" else -1
    if number < lowest:
        raise InvalidInput(f"{name}: expected at least {lowest}, got {number}")
    return number
