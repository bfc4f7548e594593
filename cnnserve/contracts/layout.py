"""The model repository's rules, defined once for the side that writes it (training/publish.py) and the side that
reads it (the server's registry): folder and file names, which folder names are models and versions, the platform
string, the config.json keys, the dynamic-batching defaults, and version policies (parsing and selection).

A name one side accepts and the other does not is a model published but never served, so both sides call the
functions here instead of testing names their own way. docs/model-repository.md states the same rules in prose.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.json"
TRITON_CONFIG_FILE = "config.pbtxt"  # Triton's ModelConfig as text; read when config.json is absent
LABELS_FILE = "labels.txt"
TMP_PREFIX = ".tmp-"
"""Publishes in flight; a leading "." is neither a model nor a version name, so readers skip these."""
PLATFORM = "onnxruntime_onnx"

NAME_RULE = "1-128 ASCII letters, digits, '_', '.', '-', starting with a letter or digit, and not all digits"
# Not all digits: such a name reads as a version folder, so a model folder passed where the repository is expected
# (or the reverse) would look valid. ASCII only: str.isalnum() and str.isdigit() accept far more than URL paths,
# file systems and Triton clients agree on.
NAME_PATTERN = re.compile(r"(?![0-9]+\Z)[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

MAX_VERSION = 10**18 - 1
VERSION_RULE = f"ASCII decimal digits without a leading zero, 1 to {MAX_VERSION}"
# "²" and Arabic-Indic "\u0661" pass str.isdigit() (int() even reads the latter as 1), "01" and "1" would be two
# folders for one number, and Triton ignores "0": one spelling per number, starting at 1. Eighteen digits keep every
# version an int64 (Triton's version type).
VERSION_PATTERN = re.compile(r"[1-9][0-9]{0,17}")

CONFIG_KEYS = frozenset(
    {
        "name", "platform", "backend", "max_batch_size", "inputs", "outputs", "labels_file", "label_output",
        "dynamic_batching", "instance_count", "preprocessing", "postprocessing", "parameters", "session",
        "execution_providers", "version_policy", "model_warmup",
    }
)  # fmt: skip
"""Top-level config.json keys the server reads; others are logged and ignored (a newer trainer may add some)."""
TENSOR_KEYS = ("name", "datatype", "dims", "reshape", "format")
"""`reshape`: {"shape": [...]}, the graph's shape per item where clients send or get `dims` (Triton's reshape).
`format` (inputs only): "NCHW" or "NHWC", Triton's input format, a layout hint ModelConfig shows to clients."""
INPUT_FORMATS = ("NCHW", "NHWC")
DYNAMIC_BATCHING_KEYS = ("max_queue_delay_us", "preferred_batch_sizes", "max_queue_size", "wait_when_idle",
                         "latency_budget_ms")  # fmt: skip
SESSION_KEYS = ("intra_op_threads", "inter_op_threads", "graph_optimization_level", "allow_spinning",
                "inline_run_max_us")  # fmt: skip

# Dynamic-batching defaults: the server's DynamicBatching (service/types.py, which says what each means) and the
# config training writes both take them from here.
MAX_QUEUE_DELAY_US = 500
PREFERRED_BATCH_SIZES: tuple[int, ...] = ()
MAX_QUEUE_SIZE = 1024
WAIT_WHEN_IDLE = False
LATENCY_BUDGET_MS = 0  # off
INLINE_RUN_MAX_US = 400
"""Session default: runs measured below this (at their batch size) may run on the event loop while the model is idle.
Measured on this project's 2-core machine (benchmarks/request_path.py, one caller): a batch sent to a session thread
and back cost that thread 0.12 ms of CPU for a 0.05 ms run, plus two wake-ups of latency. 400 us takes in the digits
CNN (~0.05-0.08 ms at batch 1) and the DCGAN generator (~0.12-0.2 ms) and bounds how long one inline run holds up
the loop's other requests."""

_POLICY_RULE = "exactly one of latest {num_versions}, all {}, specific {versions}"


def is_model_name(name: str) -> bool:
    """Whether a folder or request name can be a model (NAME_RULE); checked before it touches the file system."""
    return NAME_PATTERN.fullmatch(name) is not None


def parse_version(name: str) -> int | None:
    """The version a folder (or a request's version string) names, or None when it follows no VERSION_RULE."""
    return int(name) if VERSION_PATTERN.fullmatch(name) else None


def dynamic_batching_config() -> dict[str, Any]:
    """The dynamic_batching block a publisher writes: the server's defaults, spelled out so the file shows them."""
    return {
        "max_queue_delay_us": MAX_QUEUE_DELAY_US,
        "preferred_batch_sizes": list(PREFERRED_BATCH_SIZES),
        "max_queue_size": MAX_QUEUE_SIZE,
    }


def parse_version_policy(value: object) -> dict[str, Any]:
    """config.json's `version_policy` in normal form; absent (None) serves the newest version, as in Triton.
    ValueError names the key and the rule.

    Normal form: {"latest": {"num_versions": n >= 1}}, {"all": {}} or {"specific": {"versions": [ascending, >= 1]}}.
    """
    if value is None:
        return {"latest": {"num_versions": 1}}
    if not isinstance(value, dict) or len(value) != 1:
        raise _policy_error("version_policy", _POLICY_RULE, value)
    kind, inner = next(iter(value.items()))
    if kind not in ("latest", "all", "specific") or not isinstance(inner, dict):
        raise _policy_error("version_policy", _POLICY_RULE, value)
    allowed = {"latest": ("num_versions",), "all": (), "specific": ("versions",)}[kind]
    unknown = sorted(set(inner) - set(allowed))
    if unknown:
        raise ValueError(f"unknown key 'version_policy.{kind}.{unknown[0]}'; expected {', '.join(allowed) or 'none'}")
    if kind == "all":
        return {"all": {}}
    if kind == "latest":
        count = inner.get("num_versions", 1)
        if not _is_int(count) or count < 1:
            raise _policy_error("version_policy.latest.num_versions", "an integer >= 1", count)
        return {"latest": {"num_versions": count}}
    versions = inner.get("versions")
    if not isinstance(versions, list) or not versions or not all(_is_int(v) and v >= 1 for v in versions):
        raise _policy_error("version_policy.specific.versions", "a non-empty list of integers >= 1", versions)
    return {"specific": {"versions": sorted(set(versions))}}


def select_versions(available: Sequence[int], policy: Mapping[str, Any]) -> list[int]:
    """The versions a policy (normal form) serves out of those on disk, ascending: latest N, all, or specific."""
    ordered = sorted(available)
    if "all" in policy:
        return ordered
    if "specific" in policy:
        wanted = set(policy["specific"].get("versions", ()))
        return [v for v in ordered if v in wanted]
    count = int(policy.get("latest", {}).get("num_versions", 1))
    return ordered[-count:] if count > 0 else []


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no count


def _policy_error(key: str, rule: str, value: object) -> ValueError:
    return ValueError(f"key '{key}' must be {rule}, got {_json(value)}")


def _json(value: object) -> str:
    return json.dumps(value, default=repr)


TASK_PARAMETER = "task"
"""config parameter: what the model does ("classification", "segmentation", ...): picks the kind that serves it and
tells a client which operations fit it."""
PREPROCESSING_PARAMETER = "preprocessing"
POSTPROCESSING_PARAMETER = "postprocessing"
"""ModelConfig parameters the server publishes: config.json's blocks of the same names as JSON objects, so that
clients read a model's recipe (input size, layout, scale; output range) instead of repeating it."""
LABELS_PARAMETER = "labels"
"""ModelConfig parameter the server publishes for a model with a labels file: its lines as a JSON list, index order.
The classification extension names only a [batch, classes] output's classes; other outputs (per-pixel or per-box
classes) index the same labels, so clients read them here."""

OPTIONAL_OUTPUTS_PARAMETER = "optional_outputs"
"""config parameter: comma-separated outputs a request gets only when it names them (the server then computes only
what a batch asked for)."""


def optional_outputs(parameters: Mapping[str, str]) -> frozenset[str]:
    """The outputs a config's parameters mark optional (OPTIONAL_OUTPUTS_PARAMETER); empty when none."""
    value = parameters.get(OPTIONAL_OUTPUTS_PARAMETER, "")
    return frozenset(name.strip() for name in value.split(",") if name.strip())


def optional_outputs_parameter(names: Iterable[str]) -> str:
    return ",".join(names)
