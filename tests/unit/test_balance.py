"""Choosing among deployments: priority groups, weights, load and latency."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence

import pytest

from tollway.routing.balance import SAMPLES, Load, choose
from tollway.types import Deployment

PICKS = 4000


def dep(name: str, weight: float = 1.0, priority: int = 0) -> Deployment:
    return Deployment(provider="openai", model=name, weight=weight, priority=priority)


def shares(candidates: Sequence[Deployment], loads: Mapping[Deployment, Load],
           picks: int = PICKS, seed: int = 7) -> dict[str, float]:
    rng = random.Random(seed)
    got: Counter[str] = Counter()
    for _ in range(picks):
        d = choose(candidates, loads, rng)
        assert d is not None
        got[d.model] += 1
    return {d.model: got[d.model] / picks for d in candidates}


def test_load_counts_calls_and_takes_the_median_of_recent_latencies() -> None:
    load = Load()
    load.start()
    load.start()
    assert load.in_flight == 2
    load.done(2.0)
    assert (load.in_flight, load.latency) == (1, 2.0)
    load.start()
    load.done(None)  # a failure: no latency sample
    assert (load.in_flight, load.latency) == (1, 2.0)
    load.done(1.0)
    assert load.in_flight == 0
    assert load.latency == 1.5
    for _ in range(SAMPLES):
        load.done(0.1)
    assert load.latency == 0.1  # only the last SAMPLES count
    load.done(30.0)  # one outlier does not move a median
    assert load.latency == 0.1
    load.done(None)  # an unmatched done never drives it negative
    assert load.in_flight == 0


def test_no_candidates() -> None:
    assert choose([], {}, random.Random(1)) is None


def test_a_single_candidate_is_chosen_however_busy() -> None:
    a = dep("a")
    assert choose([a], {a: Load(in_flight=50, latency=30.0)}, random.Random(1)) is a


def test_only_the_lowest_priority_present_takes_traffic() -> None:
    a, b, c = dep("a", priority=1), dep("b", priority=2), dep("c", priority=2)
    busy = {a: Load(in_flight=100, latency=60.0)}
    assert shares([b, a, c], busy)["a"] == 1.0
    # Without the priority-1 deployment, the priority-2 ones share the traffic.
    got = shares([b, c], {})
    assert got["b"] + got["c"] == 1.0
    assert 0.45 < got["b"] < 0.55


@pytest.mark.parametrize("loads", ["none", "equal"])
def test_weights_share_traffic_with_equal_loads(loads: str) -> None:
    a, b = dep("a", weight=3.0), dep("b", weight=1.0)
    stats = {} if loads == "none" else {a: Load(latency=0.8), b: Load(latency=0.8)}
    assert shares([a, b], stats)["a"] == pytest.approx(0.75, abs=0.05)


def test_weights_share_traffic_among_more_than_two() -> None:
    group = [dep("a", weight=3.0), dep("b"), dep("c")]
    got = shares(group, {})
    assert got["a"] == pytest.approx(0.6, abs=0.05)
    assert got["b"] == pytest.approx(0.2, abs=0.05)
    assert got["c"] == pytest.approx(0.2, abs=0.05)


def test_weights_hold_under_sustained_load() -> None:
    """A closed loop of 40 concurrent calls of equal latency: each step one random call
    finishes and a new one is placed. In-flight calls settle 3:1, and so does traffic."""
    a, b = dep("a", weight=3.0), dep("b", weight=1.0)
    loads = {a: Load(), b: Load()}
    rng = random.Random(3)
    running: list[Deployment] = []
    got: Counter[Deployment] = Counter()
    for step in range(PICKS + 40):
        if len(running) == 40:
            loads[running.pop(rng.randrange(len(running)))].done(1.0)
        d = choose([a, b], loads, rng)
        assert d is not None
        loads[d].start()
        running.append(d)
        if step >= 40:
            got[d] += 1
    assert got[a] / PICKS == pytest.approx(0.75, abs=0.05)
    assert loads[a].in_flight == pytest.approx(30, abs=3)


# About 5% of picks keep the first (weighted) draw whatever the scores: exploration,
# so a deployment avoided for a while still shows when it has recovered. "Always"
# below is therefore "at least 95%", and "never" "at most ~5%".
ALWAYS, NEVER = 0.95, 0.05


def test_a_busy_deployment_gets_less_traffic() -> None:
    a, b, c = dep("a"), dep("b"), dep("c")
    got = shares([a, b], {a: Load(in_flight=4), b: Load(in_flight=1)})
    assert got["b"] >= ALWAYS
    # Among three, the busiest loses every comparison it is drawn into.
    got = shares([a, b, c], {a: Load(in_flight=4), b: Load(in_flight=1), c: Load()})
    assert got["a"] <= NEVER
    assert got["c"] > got["b"] > 0.0


def test_load_is_judged_relative_to_weight() -> None:
    # 1 in flight on a weight-3 deployment is far less busy than 2 on a weight-1 one;
    # 9 on the weight-3 one is far busier than 1 on the weight-1 one.
    big, small = dep("big", weight=3.0), dep("small", weight=1.0)
    assert shares([big, small], {big: Load(in_flight=1), small: Load(in_flight=2)})["big"] >= ALWAYS
    assert shares([big, small], {big: Load(in_flight=9), small: Load(in_flight=1)})["big"] <= NEVER


def test_small_differences_leave_the_weights_in_charge() -> None:
    # Latencies 10% apart (noise) do not override 1:1 weights.
    a, b = dep("a"), dep("b")
    got = shares([a, b], {a: Load(latency=1.0), b: Load(latency=1.1)})
    assert got["a"] == pytest.approx(0.5, abs=0.05)


def test_a_slow_deployment_gets_less_traffic() -> None:
    fast, slow, other = dep("fast"), dep("slow"), dep("other")
    loads = {fast: Load(latency=0.5), slow: Load(latency=2.0),
             other: Load(latency=0.6)}
    assert shares([fast, slow], loads)["fast"] >= ALWAYS
    got = shares([fast, slow, other], loads)
    assert got["slow"] <= NEVER
    assert got["fast"] > 0.3 and got["other"] > 0.3  # within 1.5x: shared by weight
    # Slow but idle beats fast but swamped.
    swamped = {**loads, fast: Load(in_flight=8, latency=0.5)}
    assert shares([fast, slow], swamped)["slow"] >= ALWAYS


def test_unknown_latency_is_taken_as_the_groups_median() -> None:
    # Known 1.0 and 4.0: the new one counts as 2.5, so it clearly beats the slow one
    # and clearly loses to the fast one; equal weights draw each pair a third of the time.
    fast, slow, new = dep("fast"), dep("slow"), dep("new")
    got = shares([fast, slow, new], {fast: Load(latency=1.0), slow: Load(latency=4.0)})
    assert got["slow"] <= NEVER
    assert got["new"] == pytest.approx(1 / 3, abs=0.05)
    assert got["fast"] == pytest.approx(2 / 3, abs=0.05)


def test_same_seed_same_choices() -> None:
    group = [dep("a", weight=2.0), dep("b"), dep("c")]
    assert shares(group, {}, picks=200, seed=11) == shares(group, {}, picks=200, seed=11)
