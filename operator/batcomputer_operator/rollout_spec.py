"""`spec.rollout` as a validated, immutable value: how a new version takes over.

The CRD schema checks each field on its own (enums, bounds, duration patterns); what
it cannot say on Kubernetes 1.20 (no CEL) is checked here: which fields belong to
which strategy, that Canary has steps and that they grow. A field that does not apply
to the chosen strategy refuses the spec (InvalidSpec) instead of being ignored, so a
rollout never runs differently from what its manifest says.
"""

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class RolloutError(ValueError):
    """The rollout cannot run; the message names the field."""


class Strategy(StrEnum):
    BLUE_GREEN = "BlueGreen"
    CANARY = "Canary"
    SHADOW = "Shadow"


MAX_STEPS = 10
MAX_DURATION_SECONDS = 24 * 3600
DEFAULT_PAUSE_SECONDS = 60
DEFAULT_SHADOW_SECONDS = 300
DEFAULT_MIRROR_PERCENT = 100
_DURATION = re.compile(r"^([1-9][0-9]{0,4})(s|m|h)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
_FIELDS = frozenset({"strategy", "steps", "mirrorPercent", "duration", "analysis"})
_ONLY_FOR = {
    "steps": Strategy.CANARY,
    "mirrorPercent": Strategy.SHADOW,
    "duration": Strategy.SHADOW,
}


@dataclass(frozen=True)
class Analysis:
    """Thresholds the new version must hold over a step (see the CRD for their meaning)."""

    max_error_ratio: float = 0.01
    max_p99_latency_seconds: float = 1.0
    max_disagreement: float = 0.05
    min_requests: int = 20


@dataclass(frozen=True)
class CanaryStep:
    weight: int  # percent of requests, 1..99
    pause_seconds: int


@dataclass(frozen=True)
class RolloutSpec:
    strategy: Strategy = Strategy.BLUE_GREEN
    steps: tuple[CanaryStep, ...] = ()
    mirror_percent: int = DEFAULT_MIRROR_PERCENT
    duration_seconds: int = DEFAULT_SHADOW_SECONDS
    analysis: Analysis = dataclasses.field(default_factory=Analysis)


def parse_duration(text: Any, field: str) -> int:
    """Seconds in a duration such as 30s, 5m or 1h, at most a day."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise RolloutError(f"{field}: {text!r:.40} is not a whole number with s, m or h (e.g. 5m)")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_DURATION_SECONDS:
        raise RolloutError(f"{field}: {text} is longer than 24h")
    return seconds


def parse_rollout(raw: Any, replicas: Any = 1) -> RolloutSpec:
    """`spec.rollout` of a BatModel with `spec.replicas` of `replicas`."""
    rollout = _parse(raw)
    if rollout.strategy is Strategy.CANARY and replicas == 1:
        # Canary weights are replica shares of the Service (see rollout.replica_split).
        raise RolloutError(
            "spec.rollout.strategy: Canary splits traffic by pods and needs spec.replicas "
            "of at least 2 (1 gives no share between 0 and 100 %)"
        )
    return rollout


def _parse(raw: Any) -> RolloutSpec:
    if raw is None:
        return RolloutSpec()
    if not isinstance(raw, Mapping):
        raise RolloutError(f"spec.rollout: {raw!r:.40} is not an object")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise RolloutError(
            f"spec.rollout: unknown field {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(_FIELDS))}"
        )
    strategy = _parse_strategy(raw.get("strategy", Strategy.BLUE_GREEN.value))
    for name, owner in _ONLY_FOR.items():
        if name in raw and strategy is not owner:
            raise RolloutError(
                f"spec.rollout.{name}: applies to strategy {owner.value} only, not {strategy.value}"
            )
    if "analysis" in raw and strategy is Strategy.BLUE_GREEN:
        raise RolloutError(
            "spec.rollout.analysis: applies to strategies Canary and Shadow only, not BlueGreen"
        )
    if strategy is Strategy.CANARY and "steps" not in raw:
        raise RolloutError("spec.rollout.steps: required for strategy Canary")
    analysis = _parse_analysis(raw.get("analysis"), strategy)
    if strategy is Strategy.CANARY:
        return RolloutSpec(strategy, steps=_parse_steps(raw["steps"]), analysis=analysis)
    if strategy is Strategy.SHADOW:
        return RolloutSpec(
            strategy,
            mirror_percent=_bounded_int(
                raw.get("mirrorPercent", DEFAULT_MIRROR_PERCENT),
                "spec.rollout.mirrorPercent",
                1,
                100,
            ),
            duration_seconds=parse_duration(
                raw.get("duration", f"{DEFAULT_SHADOW_SECONDS}s"), "spec.rollout.duration"
            ),
            analysis=analysis,
        )
    return RolloutSpec()


def _parse_strategy(value: Any) -> Strategy:
    try:
        return Strategy(value)
    except ValueError:
        allowed = ", ".join(s.value for s in Strategy)
        raise RolloutError(
            f"spec.rollout.strategy: {value!r:.40} is not one of {allowed}"
        ) from None


def _bounded_int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RolloutError(f"{field}: {value!r:.40} is not an integer")
    if not low <= value <= high:
        raise RolloutError(f"{field}: {value} is outside {low}..{high}")
    return value


def _bounded_number(value: Any, field: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise RolloutError(f"{field}: {value!r:.40} is not a number")
    if not low <= value <= high:
        raise RolloutError(f"{field}: {value} is outside {low}..{high}")
    return float(value)


def _parse_steps(raw: Any) -> tuple[CanaryStep, ...]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_STEPS:
        raise RolloutError(f"spec.rollout.steps: a list of 1 to {MAX_STEPS} steps is required")
    steps = []
    for index, step in enumerate(raw):
        field = f"spec.rollout.steps[{index}]"
        if not isinstance(step, Mapping) or set(step) - {"weight", "pause"}:
            raise RolloutError(f"{field}: an object with weight and an optional pause")
        weight = _bounded_int(step.get("weight"), f"{field}.weight", 1, 99)
        if steps and weight <= steps[-1].weight:
            raise RolloutError(
                f"{field}.weight: {weight} does not grow from the step before "
                f"({steps[-1].weight}); the weights must strictly increase"
            )
        pause = parse_duration(step.get("pause", f"{DEFAULT_PAUSE_SECONDS}s"), f"{field}.pause")
        steps.append(CanaryStep(weight, pause))
    return tuple(steps)


def _parse_analysis(raw: Any, strategy: Strategy) -> Analysis:
    if raw is None:
        return Analysis()
    if not isinstance(raw, Mapping):
        raise RolloutError(f"spec.rollout.analysis: {raw!r:.40} is not an object")
    allowed = {"maxErrorRatio", "maxP99LatencySeconds", "maxDisagreement", "minRequests"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise RolloutError(
            f"spec.rollout.analysis: unknown field {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    if "maxDisagreement" in raw and strategy is not Strategy.SHADOW:
        raise RolloutError(
            "spec.rollout.analysis.maxDisagreement: applies to strategy Shadow only, "
            f"not {strategy.value}"
        )
    defaults = Analysis()
    field = "spec.rollout.analysis."
    p99 = _bounded_number(
        raw.get("maxP99LatencySeconds", defaults.max_p99_latency_seconds),
        field + "maxP99LatencySeconds",
        0,
        60,
    )
    if p99 == 0:
        raise RolloutError(f"{field}maxP99LatencySeconds: must be above 0")
    return Analysis(
        max_error_ratio=_bounded_number(
            raw.get("maxErrorRatio", defaults.max_error_ratio), field + "maxErrorRatio", 0, 1
        ),
        max_p99_latency_seconds=p99,
        max_disagreement=_bounded_number(
            raw.get("maxDisagreement", defaults.max_disagreement), field + "maxDisagreement", 0, 1
        ),
        min_requests=_bounded_int(
            raw.get("minRequests", defaults.min_requests), field + "minRequests", 0, 1_000_000
        ),
    )
