"""Which Kubernetes Events get posted: rate limits in the manner of client-go's recorder.

client-go lets each object post a burst of 25 Events, then one per 5 minutes (its
spam filter). On top, one budget for the whole operator (a burst of 100, then 5 a
second), so that 1,000 models rolling out at once do not post thousands of Events
to the API server; what is not posted is still logged.
"""

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

COMPONENT = "batcomputer-operator"


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: float
    tokens: float | None = None  # full until first used
    updated: float = 0.0

    def available(self, now: float) -> float:
        if self.tokens is None:
            self.tokens = self.burst
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return self.tokens


@dataclass
class EventLimiter:
    per_object_burst: float = 25
    per_object_rate: float = 1 / 300
    total_burst: float = 100
    total_rate: float = 5
    clock: Callable[[], float] = time.monotonic
    _objects: dict[str, TokenBucket] = field(default_factory=dict)
    _total: TokenBucket | None = None

    def allow(self, uid: str) -> bool:
        """Whether an Event about the object `uid` may be posted now."""
        now = self.clock()
        if self._total is None:
            self._total = TokenBucket(self.total_rate, self.total_burst)
        own = self._objects.setdefault(
            uid, TokenBucket(self.per_object_rate, self.per_object_burst)
        )
        # Both must have a token; neither is spent when the other has none.
        if own.available(now) < 1 or self._total.available(now) < 1:
            return False
        own.tokens -= 1
        self._total.tokens -= 1
        return True

    def forget(self, uid: str) -> None:
        """Drop the budget of an object that is gone."""
        self._objects.pop(uid, None)


_MAX_MESSAGE = 1024


def event(
    involved: Mapping[str, Any], reason: str, message: str, *, warning: bool, now: str
) -> dict:
    """A core v1 Event about `involved` (a BatModel), as client-go's recorder writes one."""
    metadata = involved["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
        "involvedObject": {
            "apiVersion": involved["apiVersion"],
            "kind": involved["kind"],
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
        },
        "reason": reason,
        "message": message[:_MAX_MESSAGE],
        "type": "Warning" if warning else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
