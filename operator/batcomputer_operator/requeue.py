"""When to look at a model again, as controller-runtime's work queue decides it: errors
back off exponentially with jitter up to a cap; everything else waits for a watch
event, with a long, jittered resync as the only safety net (it reads the cache, not
the API server, so an idle model costs no request)."""

import random

BASE_SECONDS = 0.5
CAP_SECONDS = 300.0
JITTER = 0.2


def _jittered(seconds: float, rng: random.Random | None = None) -> float:
    spread = (rng or random).uniform(-JITTER, JITTER)
    return seconds * (1 + spread)


def backoff(failures: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after `failures` failures in a row (0: the first failure)."""
    seconds = BASE_SECONDS * 2 ** min(failures, 30)
    return min(CAP_SECONDS, _jittered(seconds, rng))


def resync(seconds: float, rng: random.Random | None = None) -> float:
    """The safety resync, spread so that 1,000 models do not all come due at once."""
    return _jittered(seconds, rng)
