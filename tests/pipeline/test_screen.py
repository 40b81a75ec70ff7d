"""The counter screen against a plain sequential reference, over generated series."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.screen import DROP, KEEP, TOO_FAST, counters_of, screen
from pipeline.state import SeriesState

RATE = 10.0  # units per ms


def reference(samples: list[tuple[int, float]], state: tuple[int, float] | None, start: int, slack: int) -> list[int]:
    """One series, in time order: each sample against the last accepted one."""
    first = samples[0][0] if samples else 0
    prev = state if state is not None else ((start, 0.0) if 0 <= start < first else None)
    out = []
    for t, v in samples:
        if prev is None:
            out.append(KEEP)
            prev = (t, v)
            continue
        pt, pv = prev
        if t <= pt:
            out.append(KEEP)  # late or duplicate: not the screen's to judge
            continue
        room = RATE * (t - pt + slack)
        why = TOO_FAST if v >= pv and v - pv > room else DROP if v < pv and v > room else KEEP
        out.append(why)
        if why == KEEP:
            prev = (t, v)
    return out


# (ms since the sample before, value, batch): a later batch may hold older times (a replay)
series_samples = st.lists(
    st.tuples(st.integers(1, 400), st.one_of(st.integers(0, 20_000), st.integers(10**6, 10**9)), st.integers(0, 2)),
    max_size=12,
)


@settings(max_examples=300)
@given(
    st.lists(series_samples, min_size=1, max_size=4),
    st.lists(st.one_of(st.none(), st.tuples(st.integers(0, 3000), st.integers(0, 50_000))), min_size=4, max_size=4),
    st.lists(st.integers(-1, 2000), min_size=4, max_size=4),
    st.integers(0, 300),
)
def test_screen_rejects_exactly_what_a_sequential_check_rejects(
    all_series: list[list[tuple[int, int, int]]], states: list[tuple[int, int] | None], starts: list[int], slack: int
) -> None:
    keys, bidx, ts, val, gid = [], [], [], [], []
    per_series: dict[int, list[tuple[int, int, float]]] = {}
    for s, samples in enumerate(all_series):
        t = 1000
        for dt, v, b in samples:
            t += dt
            keys.append(s)
            bidx.append(b)
            ts.append(t)
            val.append(float(v))
            gid.append(s)
            per_series.setdefault(s, []).append((b, t, float(v)))
    if not keys:
        return
    state = SeriesState()
    known = [s for s in range(len(all_series)) if states[s] is not None]
    if known:
        state.update(
            np.array(known, np.uint64),
            np.array([states[s][0] for s in known], np.int64),  # type: ignore[index]
            np.array([float(states[s][1]) for s in known]),  # type: ignore[index]
        )
    # shuffled, as a flush holds several batches; the screen orders by series, batch and time
    order = np.random.default_rng(len(keys)).permutation(len(keys))
    k, b_, t, v, g = (np.array(a)[order] for a in (keys, bidx, ts, val, gid))
    c = counters_of(
        k.astype(np.uint64), b_.astype(np.int64), t.astype(np.int64), v.astype(np.float64), np.ones(len(k), bool),
        np.full(len(k), RATE), state, np.array(starts, np.int64)[g],
    )  # fmt: skip
    got = screen(c, slack)
    for s, samples in per_series.items():
        st_ = states[s]
        ref_state = None if st_ is None else (st_[0], float(st_[1]))
        in_order = [(t_, x) for _, t_, x in sorted(samples)]  # the accountant's order: batch, then time
        want = reference(in_order, ref_state, starts[s] if ref_state is None else -1, slack)
        assert got[c.key == np.uint64(s)].tolist() == want, (s, samples, states[s], starts[s])


def test_a_late_sample_in_a_later_batch_is_not_what_the_next_one_is_compared_with() -> None:
    """Batch 0 says 100 at 2000; batch 1 replays 1,000,000 at 1500, then says 1,000,100 at 2500:
    against the newest before it (100 at 2000) that is a rise no sandbox makes in 500 ms."""
    c = counters_of(
        np.zeros(3, np.uint64), np.array([0, 1, 1]), np.array([2000, 1500, 2500]), np.array([100.0, 1e6, 1e6 + 100]),
        np.ones(3, bool), np.full(3, RATE), SeriesState(), np.full(3, 1000),
    )  # fmt: skip
    assert screen(c, 0).tolist() == [KEEP, KEEP, TOO_FAST]  # the replay itself is the accountant's (late)
