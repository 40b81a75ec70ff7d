"""KPA behaviour on scripted load traces, with an orchestrator that applies each decision."""

from __future__ import annotations

import itertools

import numpy as np

from scaling.kpa import Decision, Kpa, KpaConfig, replay

CFG = KpaConfig()
WARM = CFG.stable_s + CFG.grace_s


def run(load: list[float], ready0: int) -> list[tuple[int, Decision]]:
    """Decisions every 2 s; the replica count follows each decision at once (ready = desired)."""
    kpa, ready, out = Kpa(CFG), ready0, []
    series = np.array(load, float)
    for end in range(WARM, len(series), CFG.tick_s):
        d = kpa.decide(end, series[end + 1 - WARM : end + 1], ready, per_replica=1.0)
        out.append((end, d))
        ready = d.desired
    return out


def test_step_up_panics_fast_and_never_lowers_while_panicking() -> None:
    load = [1.0] * 120 + [12.0] * 30 + [1.0] * 120  # one core per replica, target 70%
    out = run(load, ready0=2)
    before = [d.desired for t, d in out if t < 120]
    assert set(before[-5:]) == {2}  # ceil(1 / 0.7)
    jump = next(t for t, d in out if t >= 120 and d.panicking)
    assert jump - 120 <= 4  # the 6 s panic window sees it within a few seconds
    peak = max(d.desired for _, d in out)
    assert peak >= 12 / 0.7  # ceil(12 / 0.7) = 18
    in_panic = [d.desired for t, d in out if t >= jump and d.panicking]
    assert all(b >= a for a, b in itertools.pairwise(in_panic))  # never lowered
    calm = next(t for t, d in out if t > jump and not d.panicking)
    assert calm >= jump + CFG.stable_s  # panic lasts a whole stable window past its last tick
    held = [d.desired for t, d in out if 150 <= t < calm]  # the load fell back at 150 s
    assert held and set(held) == {peak}  # ... and the recommendation held at its peak
    assert out[-1][1].desired == 2 and not out[-1][1].panicking


def test_step_down_is_gradual_at_most_halving_per_decision() -> None:
    load = [20.0] * 200 + [0.5] * 200
    out = run(load, ready0=29)
    assert out[0][1].desired == 29  # ceil(20 / 0.7)
    desired = [d.desired for _, d in out]
    assert all(b >= a // 2 for a, b in itertools.pairwise(desired))
    assert desired[-1] == 1 and min(desired) == 1  # ceil(0.5 / 0.7), never 0 while there is load
    assert len({d for t, d in zip([t for t, _ in out], desired, strict=True) if 200 <= t < 260}) > 3  # gradual


def test_idle_goes_to_zero_only_after_the_stable_window_and_grace() -> None:
    load = [1.5] * 100 + [0.0] * 150
    out = run(load, ready0=3)
    zero = [t for t, d in out if d.desired == 0]
    assert zero and min(zero) >= 100 + CFG.stable_s + CFG.grace_s - 1
    assert all(d.desired >= 1 for t, d in out if t < 100 + CFG.stable_s + CFG.grace_s - 1)


def test_flapping_load_does_not_make_the_recommendation_oscillate() -> None:
    flap = ([2.0] * 3 + [4.0] * 3) * 60  # swings of 2x every 3 s around 3 cores
    out = run([3.0] * 100 + flap, ready0=5)
    after = {d.desired for t, d in out if t >= 100}
    assert after == {5}  # ceil(3 / 0.7), every decision
    assert not any(d.panicking for _, d in out)


def test_no_data_is_zero_load_and_replay_matches_a_live_run() -> None:
    load = np.array([2.0] * 100 + [0.0] * 20 + [6.0] * 50)
    ready = np.full(len(load), 3)
    decisions = replay(load, ready, per_replica=1.0)
    kpa, live = Kpa(CFG), []
    for end in range(WARM + (len(load) - 1 - WARM) % 2, len(load), 2):
        live.append(kpa.decide(end, load[end + 1 - WARM : end + 1], 3, 1.0))
    assert decisions == live
    assert decisions[-1].stable == (2.0 * 0 + 0.0 * 10 + 6.0 * 50) / 60
