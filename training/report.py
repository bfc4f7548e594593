"""Report cards: each run measures its own model against fixed thresholds, prints PASS/FAIL, and the card goes into
report.json and the ONNX metadata. A failing card still publishes, marked `passed: false`, unless its kind refuses
to publish below a floor (BelowFloor). What each kind checks is its own report.py's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cnnserve.training.publish import PublishError

logger = logging.getLogger(__name__)


class BelowFloor(PublishError):
    """The report card is below a floor its job enforces: the model is not published (the other models still are)."""


@dataclass(frozen=True)
class Check:
    name: str  # what was measured
    value: float  # the measurement
    threshold: float  # the least value that passes (rule ">="), or the most (rule "<=")
    passed: bool
    rule: str = ">="


def card(model: str, checks: Sequence[Check], metrics: dict[str, Any]) -> dict[str, Any]:
    """The report card as report.json stores it; `passed` is null when no threshold applies (other datasets)."""
    return {
        "model": model,
        "passed": all(c.passed for c in checks) if checks else None,
        "checks": [c.__dict__ for c in checks],
        "metrics": metrics,
    }


def check(name: str, value: float, threshold: float) -> Check:
    return Check(name, round(float(value), 6), round(float(threshold), 6), bool(value >= threshold))


def check_at_most(name: str, value: float, threshold: float) -> Check:
    """A ceiling: passes when value <= threshold (a distance, a ratio of distances)."""
    return Check(name, round(float(value), 6), round(float(threshold), 6), bool(value <= threshold), "<=")


def announce(report: dict[str, Any], publishing: bool = True) -> None:
    """Print the card; a failing one loudly (published marked passed=false, unless `publishing` is False)."""
    verdict = {True: "PASS", False: "FAIL", None: "NO THRESHOLDS"}[report["passed"]]
    print(f"report card {report['model']}: {verdict}")
    for c in report["checks"]:
        mark = "ok  " if c["passed"] else "FAIL"
        print(f"  [{mark}] {c['name']}: {c['value']:.4f} (needs {c.get('rule', '>=')} {c['threshold']:.4f})")
    if report["passed"] is False:
        then = "publishing anyway with report.passed=false" if publishing else "not publishing"
        logger.warning("report card FAILED model=%s; %s", report["model"], then)
