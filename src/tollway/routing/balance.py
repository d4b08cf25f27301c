"""Choosing the deployment for a call among the usable candidates of one alias.

Only the lowest `priority` present takes traffic (higher ones are the spill-over when
the lower are unusable, which the caller decides by leaving them out of the
candidates). Within that group, "power of two choices": draw two distinct deployments
with probability proportional to weight and send the call to the one with the lower
score. Always taking the single best instead would herd: the stats lag (latency is
known only once calls finish, and each gateway instance sees only its own calls), so
a burst would all land on whichever deployment looked best a moment ago. Comparing two
random ones still steers away from a busy or slow deployment but spreads the burst
(the classic result: two random choices keep the busiest far closer to the average
than one random choice does), at O(1) cost and without sorting the group.

Score = (latency + 50 ms) * (1 + in_flight / weight): the deployment's usual latency, growing
with its queue relative to its capacity (weight). Weight scales only the load term,
not the whole score: with equal stats the scores tie, the tie goes to the first draw,
and traffic is shared exactly by weight; as load builds, in-flight calls settle in
proportion to weight. (Dividing the whole score by weight would send every call of an
idle two-deployment group to the heavier one.) The second draw wins only when its
score is clearly (1.5x) lower, so latency noise between similar deployments leaves the
weights in charge; and 5% of picks keep the first draw whatever the scores, so a
deployment avoided for being slow still gets calls that show when it has recovered.

Pure: no I/O; randomness comes from the injected `rng`. Like the breaker, Load is
updated from a single event loop, so it needs no lock.
"""

from __future__ import annotations

import random
import statistics
from collections import deque
from collections.abc import Mapping, Sequence

from tollway.types import Deployment

SAMPLES = 8  # latencies remembered per deployment: a median of 8 shrugs off outliers
UNKNOWN_LATENCY = 1.0  # seconds, when no deployment in the group has a latency yet
# Added to every latency: differences of a few milliseconds (process jitter) are noise
# next to an LLM call's seconds, and must not override the weights.
SLACK = 0.05
CLEARLY_BETTER = 1.5  # the second draw wins only with a score this many times lower
EXPLORE = 0.05  # share of picks that keep the weighted draw, to refresh stale stats


class Load:
    """Live stats of one deployment: calls in flight, and the median latency of its
    last few successful calls. A median, not an average: one slow call (a new
    connection, a pause) must not brand a deployment slow until it is called again."""

    __slots__ = ("in_flight", "recent")

    def __init__(self, in_flight: int = 0, latency: float | None = None) -> None:
        self.in_flight = in_flight
        self.recent: deque[float] = deque(maxlen=SAMPLES)
        if latency is not None:
            self.recent.append(latency)

    @property
    def latency(self) -> float | None:
        """Feed `done` a measure that does not scale with the output's length (e.g.
        time to first token), or long answers read as slowness."""
        if not self.recent:
            return None
        return statistics.median(self.recent)

    def start(self) -> None:
        self.in_flight += 1

    def done(self, seconds: float | None) -> None:
        """A started call ended: `seconds` its latency, or None if it failed (a
        failure's latency says nothing about how fast the deployment serves)."""
        self.in_flight = max(0, self.in_flight - 1)
        if seconds is not None:
            self.recent.append(seconds)


def choose(candidates: Sequence[Deployment], loads: Mapping[Deployment, Load],
           rng: random.Random) -> Deployment | None:
    """The deployment for the next call, or None without candidates. Weights must be
    > 0 (the configuration checks); a deployment missing from `loads` is idle and
    of unknown latency."""
    if not candidates:
        return None
    top = min(d.priority for d in candidates)
    group = [d for d in candidates if d.priority == top]
    first = _draw(group, rng)
    rest = [d for d in group if d is not first]
    if not rest:
        return first
    second = _draw(rest, rng)
    # An unknown latency is taken as the group's typical one, so a new deployment is
    # neither shunned nor flooded.
    known = [lat for d in group
             if (load := loads.get(d)) is not None and (lat := load.latency) is not None]
    typical = statistics.median(known) if known else UNKNOWN_LATENCY
    # Switch only for a clear difference, and never on an exploration pick: small
    # latency noise must not override the weights, and a deployment that was slow once
    # must get calls now and then to show it recovered.
    if rng.random() < EXPLORE:
        return first
    if _score(second, loads.get(second), typical) * CLEARLY_BETTER < _score(
            first, loads.get(first), typical):
        return second
    return first


def _draw(group: Sequence[Deployment], rng: random.Random) -> Deployment:
    if len(group) == 1:
        return group[0]
    return rng.choices(group, weights=[d.weight for d in group])[0]


def _score(d: Deployment, load: Load | None, typical: float) -> float:
    if load is None:
        return typical + SLACK
    latency = load.latency
    if latency is None:
        latency = typical
    return (latency + SLACK) * (1 + load.in_flight / d.weight)
